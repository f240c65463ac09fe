#!/usr/bin/env python3
"""What a tool costs per language: compile, cached load, fresh and warm call
latency over MCP stdio, fuel per call and artifact size, for each component
given, measured in one run on this machine (so the rows compare).

usage: costs.py COFFERDAM NAME=TOOL.wasm=INPUT_JSON[=MOUNT] ... [--calls N]

The README's per-language table comes from this script.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def inspect(cofferdam, wasm, data):
    out = subprocess.run([cofferdam, "--data-dir", data, "inspect", wasm],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"artifact\s+(Compiled|Cached) in ([0-9.]+) ms", out)
    return m.group(1), float(m.group(2))


def session(cofferdam, config):
    server = subprocess.Popen([cofferdam, "serve", "--config", config],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    ids = iter(range(1, 10**9))

    def rpc(method, params=None, notify=False):
        message = {"jsonrpc": "2.0", "method": method}
        if not notify:
            message["id"] = next(ids)
        if params is not None:
            message["params"] = params
        server.stdin.write(json.dumps(message) + "\n")
        server.stdin.flush()
        if notify:
            return None
        return json.loads(server.stdout.readline())["result"]

    rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "costs", "version": "1"}})
    rpc("notifications/initialized", notify=True)
    return server, rpc


def calls(cofferdam, config, tool, arguments, n):
    server, rpc = session(cofferdam, config)
    times, fuel = [], []
    for _ in range(n):
        start = time.perf_counter()
        r = rpc("tools/call", {"name": tool, "arguments": arguments})
        times.append((time.perf_counter() - start) * 1e3)
        assert not r.get("isError"), r
        fuel.append(r["_meta"]["fuelUsed"])
    server.stdin.close()
    server.wait()
    times = times[n // 10:]  # the first calls warm the process up
    return statistics.median(times), statistics.median(fuel)


def main():
    args = sys.argv[1:]
    n = 200
    if "--calls" in args:
        i = args.index("--calls")
        n = int(args[i + 1])
        del args[i:i + 2]
    cofferdam, specs = os.path.abspath(args[0]), args[1:]
    print("| tool | component | artifact | compile | cached load | fresh call p50 | warm call p50 | fuel/call |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in specs:
        name, wasm, arguments, *mount = spec.split("=", 3)
        wasm = os.path.abspath(wasm)
        with tempfile.TemporaryDirectory() as work:
            data = os.path.join(work, "data")
            kind, compile_ms = inspect(cofferdam, wasm, data)
            assert kind == "Compiled", kind
            kind, cached_ms = inspect(cofferdam, wasm, data)
            assert kind == "Cached", kind
            artifact = sum(os.path.getsize(os.path.join(root, f))
                           for root, _, files in os.walk(os.path.join(data, "artifacts")) for f in files)
            rows = {}
            for warm in (False, True):
                config = os.path.join(work, f"cofferdam-{warm}.toml")
                with open(config, "w") as f:
                    f.write(f'data_dir = "{data}"\n')
                    if mount:
                        f.write(f'allowed_roots = ["{os.path.abspath(mount[0])}"]\n')
                    f.write(f'[tools.{json.dumps(name)}]\ncomponent = "{wasm}"\n')
                    if mount:
                        f.write(f'[[tools.{json.dumps(name)}.mounts]]\nhost = "{os.path.abspath(mount[0])}"\nguest = "/data"\n')
                    if warm:
                        f.write(f'[tools.{json.dumps(name)}.warm]\ninstances = 1\n')
                rows[warm] = calls(cofferdam, config, name, json.loads(arguments), n)
        size = os.path.getsize(wasm)
        print(f"| {name} | {size / 2**20:.1f} MiB | {artifact / 2**20:.1f} MiB | {compile_ms / 1e3:.1f} s | "
              f"{cached_ms:.0f} ms | {rows[False][0]:.2f} ms | {rows[True][0]:.2f} ms | {rows[False][1] / 1e6:.2f} M |")


if __name__ == "__main__":
    main()

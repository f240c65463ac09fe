"""Builds the Python test tools and the csv-summary example, runs each through
the real `cofferdam` CLI, and checks the exact outcome class of every case.

    python3 tests/tools-py/check.py --cofferdam target/debug/cofferdam

Needs componentize-py 0.25.1 (`pip install componentize-py==0.25.1`) and a
built host. Each run uses a fresh data dir, so every component is compiled
once (about 20 s each with a debug host). `--skip-build` reuses the
components already in `--out`. Ends with `N passed, N failed`.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[2]
TOOLS = {
    "spin": REPO / "tests/tools-py/spin.py",
    "escape": REPO / "tests/tools-py/escape.py",
    "membomb": REPO / "tests/tools-py/membomb.py",
    "raiser": REPO / "tests/tools-py/raiser.py",
    "counter": REPO / "tests/tools-py/counter.py",
    "fetch": REPO / "tests/tools-py/fetch.py",
    "csv_summary": REPO / "examples/csv-summary/csv_summary.py",
}
SAMPLE = REPO / "examples/csv-summary/sample"


class Status(http.server.BaseHTTPRequestHandler):
    """GET /status/N answers N (429 with Retry-After: 3); anything else 200."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        parts = self.path.strip("/").split("/")
        code = int(parts[1]) if parts[0] == "status" else 200
        body = f"status {code}\n".encode()
        self.send_response(code)
        if code == 429:
            self.send_header("Retry-After", "3")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Checker:
    def __init__(self, cofferdam: Path, out: Path, data_dir: Path) -> None:
        self.cofferdam = cofferdam
        self.out = out
        self.env = dict(os.environ, COFFERDAM_DATA_DIR=str(data_dir))
        self.passed = 0
        self.failed = 0

    def wasm(self, name: str) -> str:
        return str(self.out / f"{name}.wasm")

    def run(self, args: list[str], input_value: Any) -> tuple[int, dict]:
        cmd = [str(self.cofferdam), "run", *args, "--json", "--input", json.dumps(input_value)]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        try:
            return result.returncode, json.loads(result.stdout)
        except ValueError:
            return result.returncode, {"ok": None, "stdout": result.stdout, "stderr": result.stderr[-2000:]}

    def case(
        self,
        label: str,
        args: list[str],
        input_value: Any,
        expect_class: Optional[str],
        check: Optional[Callable[[dict], bool]] = None,
    ) -> None:
        started = time.monotonic()
        code, outcome = self.run(args, input_value)
        took = time.monotonic() - started
        if expect_class is None:
            ok = outcome.get("ok") is True and code == 0
            shown = json.dumps(outcome.get("output"))[:160]
        else:
            error = outcome.get("error") or {}
            ok = outcome.get("ok") is False and error.get("class") == expect_class
            shown = f"[{error.get('class')}] {error.get('message')}"
        if ok and check is not None:
            ok = bool(check(outcome))
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        mark = "ok  " if ok else "FAIL"
        print(f"{mark} {label} ({took:.1f} s): exit {code} {shown}")
        if not ok:
            print(f"     got: {json.dumps(outcome)[:1500]}")


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / "guest-sdk/python/src"))
    for name, source in TOOLS.items():
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "cofferdam_guest", "build", "-q", str(source), "-o", str(out / f"{name}.wasm")],
            env=env,
            check=True,
        )
        print(f"built {name}.wasm in {time.monotonic() - started:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cofferdam", type=Path, default=REPO / "target/debug/cofferdam")
    parser.add_argument("--out", type=Path, default=REPO / "target/python")
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    if not args.cofferdam.is_file():
        print(f"error: no host binary at {args.cofferdam}: build it, or pass --cofferdam", file=sys.stderr)
        return 2
    if not args.skip_build:
        build(args.out)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Status)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with tempfile.TemporaryDirectory(prefix="cofferdam-py-check-") as tmp:
        tmp_path = Path(tmp)
        c = Checker(args.cofferdam.resolve(), args.out.resolve(), tmp_path / "data")
        mount = ["--mount", f"{SAMPLE}:/data:ro"]

        # The example, on a read-only mount.
        csv = c.wasm("csv_summary")
        c.case("csv-summary summarizes the sample", [csv, *mount], {"path": "cities.csv"}, None,
               lambda o: o["output"]["rows"] == 5 and o["output"]["columns"][2]["max"] == 3305408.0)
        c.case("csv-summary: path leaving /data", [csv, *mount], {"path": "../../etc/passwd"}, "invalid-input")
        c.case("csv-summary: absolute path off /data", [csv, *mount], {"path": "/etc/passwd"}, "invalid-input")
        c.case("csv-summary: missing file", [csv, *mount], {"path": "nope.csv"}, "invalid-input",
               lambda o: "FileNotFoundError" in o["error"]["message"])
        c.case("csv-summary: unknown field", [csv, *mount], {"path": "cities.csv", "colour": 1}, "invalid-input",
               lambda o: "unknown field" in o["error"]["message"])
        c.case("csv-summary: wrong type", [csv, *mount], {"path": 7}, "invalid-input",
               lambda o: "expected a string, got a number" in o["error"]["message"])

        # A loop forever: stopped by fuel, and by the deadline when fuel is plenty.
        spin = c.wasm("spin")
        c.case("spin: out of fuel", [spin, "--fuel", "100000000"], {}, "out-of-fuel")
        c.case("spin: deadline", [spin, "--timeout", "2s", "--fuel", "1000000000000"], {}, "deadline-exceeded")

        # Reads outside the mount are denied by the host.
        secret_dir = tmp_path / "outside"
        (secret_dir / "data").mkdir(parents=True)
        (secret_dir / "secret.txt").write_text("SECRET\n")
        (secret_dir / "data" / "inside.txt").write_text("inside\n")
        escape = c.wasm("escape")
        paths = ["/data/inside.txt", "/data/../secret.txt", "../secret.txt", "/data/../../etc/passwd", "/etc/passwd"]
        c.case("escape: only the mounted file is read", [escape, "--mount", f"{secret_dir / 'data'}:/data:ro"],
               {"paths": paths}, None,
               lambda o: [a["ok"] for a in o["output"]] == [True, False, False, False, False]
               and "SECRET" not in json.dumps(o["output"]))
        c.case("escape: /etc/passwd raised", [escape], {"paths": ["/etc/passwd"], "raise_first": True}, "invalid-input")
        c.case("escape: ../ raised", [escape, "--mount", f"{secret_dir / 'data'}:/data:ro"],
               {"paths": ["/data/../secret.txt"], "raise_first": True}, "invalid-input",
               lambda o: "PermissionError" in o["error"]["message"])

        # Allocation without end hits the memory cap, typed.
        membomb = c.wasm("membomb")
        c.case("membomb: default 128 MiB cap", [membomb], {}, "memory-limit",
               lambda o: "128 MiB" in o["error"]["message"])
        c.case("membomb: 64 MiB cap", [membomb, "--memory-mib", "64"], {}, "memory-limit")

        # Each exception maps to its tool error (one attempt: no retries).
        raiser = [c.wasm("raiser"), "--attempts", "1"]
        for kind, cls in [
            ("invalid-input", "invalid-input"),
            ("transient", "transient"),
            ("rate-limited", "rate-limited"),
            ("permanent", "permanent"),
            ("value-error", "permanent"),
            ("file-not-found", "invalid-input"),
        ]:
            c.case(f"raiser: {kind}", raiser, {"kind": kind}, cls)
        c.case("raiser: rate-limited carries retry-after", raiser, {"kind": "rate-limited"}, "rate-limited",
               lambda o: o["error"]["retry_after_ms"] == 1500)
        c.case("raiser: ValueError keeps type and message", raiser, {"kind": "value-error"}, "permanent",
               lambda o: o["error"]["message"].endswith("ValueError: as asked"))
        c.case("raiser: unknown Literal value", raiser, {"kind": "other"}, "invalid-input")
        c.case("raiser: returns", raiser, {"kind": "none"}, None, lambda o: o["output"] == {"raised": None})

        # State over wasi:keyvalue.
        manifest = tmp_path / "counter.toml"
        manifest.write_text(f'component = "{c.wasm("counter")}"\n\n[state]\nbucket = "py-counter"\n')
        state = ["--manifest", str(manifest), "--agent", "checker"]
        c.case("counter: first call", state, {"note": "a", "reset": True}, None, lambda o: o["output"]["calls"] == 1)
        c.case("counter: state persists", state, {"note": "b"}, None,
               lambda o: o["output"]["calls"] == 2 and o["output"]["notes"] == ["a", "b"])
        c.case("counter: no grant", [c.wasm("counter")], {}, "permanent",
               lambda o: "no state is granted" in o["error"]["message"])

        # HTTP over wasi:http, against the loopback server above.
        fetch_manifest = tmp_path / "fetch.toml"
        fetch_manifest.write_text(
            f'component = "{c.wasm("fetch")}"\n\n[http]\nallow = ["http://127.0.0.1:{port}"]\n'
            'allow_private = ["127.0.0.0/8"]\n'
        )
        fetch = ["--manifest", str(fetch_manifest), "--attempts", "1"]
        base = f"http://127.0.0.1:{port}"
        c.case("fetch: 200", fetch, {"url": f"{base}/ok"}, None, lambda o: o["output"]["status"] == 200)
        c.case("fetch: 429", fetch, {"url": f"{base}/status/429"}, "rate-limited",
               lambda o: o["error"]["retry_after_ms"] == 3000)
        c.case("fetch: 503", fetch, {"url": f"{base}/status/503"}, "transient")
        c.case("fetch: 500", fetch, {"url": f"{base}/status/500"}, "permanent")
        c.case("fetch: 404", fetch, {"url": f"{base}/status/404"}, "invalid-input")
        c.case("fetch: origin not allowed", [c.wasm("fetch"), "--attempts", "1"], {"url": f"{base}/ok"}, "permanent",
               lambda o: "refused by the host's network policy" in o["error"]["message"])
        server.shutdown()
        server.server_close()
        c.case("fetch: connection refused", fetch, {"url": f"{base}/ok"}, "transient",
               lambda o: "upstream unavailable" in o["error"]["message"])

    print(f"{c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""`cofferdam-py`: checks a Python tool and packages it into a component.

```text
cofferdam-py build tool.py -o tool.wasm [--wit DIR]
cofferdam-py describe tool.py [--wit DIR]
python -m cofferdam_guest build tool.py -o tool.wasm
```

`build` first imports the tool's module here, on the build machine's
Python, so a type the schema cannot express fails now with the field's
name. Then it stages an entry module and a copy of this package in a
temporary directory and runs componentize-py with the WIT world pinned
(`-d <repo>/wit -w tool`, or the world `tool-http` when the tool imports
`cofferdam_guest.http`). componentize-py sees only the staged directory
and the tool's directory, never the build machine's site-packages.

What it does not do: install componentize-py (`pip install
componentize-py==0.25.1`), or make the output byte-for-byte reproducible:
componentize-py snapshots CPython after it starts, and that snapshot holds
the interpreter's random hash seed (see the README).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "find_wit", "COMPONENTIZE_PY_VERSION"]

#: The componentize-py this SDK is written against (its CPython, its bindings).
COMPONENTIZE_PY_VERSION = "0.25.1"
#: The WIT package `_component` is written against.
TOOL_PACKAGE = "cofferdam:tool@0.1.0"
HTTP_VERSION = "0.2.12"

_PACKAGE_DIR = Path(__file__).resolve().parent
_ENTRY = "_cofferdam_app"


class BuildError(Exception):
    """A build that cannot go on; the message says what to do."""


def find_wit(explicit: Optional[str] = None) -> Path:
    """The directory holding `tool.wit`: `--wit`, else `$COFFERDAM_WIT`, else
    the repository this package sits in (`guest-sdk/python/src/cofferdam_guest`
    → `wit/`), else `./wit`."""
    given = explicit or os.environ.get("COFFERDAM_WIT")
    if given:
        candidates = [Path(given)]
    else:
        candidates = [_PACKAGE_DIR.parents[3] / "wit", Path.cwd() / "wit"]
    for path in candidates:
        tool_wit = path / "tool.wit"
        if not tool_wit.is_file():
            continue
        if f"package {TOOL_PACKAGE};" not in tool_wit.read_text(encoding="utf-8"):
            raise BuildError(f"{tool_wit} is not package {TOOL_PACKAGE}, which this SDK is written for")
        return path.resolve()
    if given:
        raise BuildError(f"{given} has no tool.wit")
    raise BuildError(
        "cannot find the cofferdam WIT (wit/tool.wit): pass --wit DIR or set COFFERDAM_WIT "
        "to the `wit` directory of a cofferdam checkout"
    )


def _componentize_py() -> list[str]:
    """The command that runs the pinned componentize-py, or a BuildError."""
    how = f"pip install componentize-py=={COMPONENTIZE_PY_VERSION}"
    if importlib.util.find_spec("componentize_py") is None:
        raise BuildError(f"componentize-py is not installed for {sys.executable}: {how}")
    version = importlib.metadata.version("componentize-py")
    if version != COMPONENTIZE_PY_VERSION:
        raise BuildError(
            f"componentize-py {version} is installed, but this SDK is pinned to "
            f"{COMPONENTIZE_PY_VERSION} (another version packages another CPython): {how}"
        )
    return [sys.executable, "-c", "import componentize_py; componentize_py.script()"]


def _module_name(path: Path) -> str:
    name = path.stem
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise BuildError(f"{path.name} is not an importable module name: rename it (letters, digits, `_`)")
    if name in (_ENTRY, "cofferdam_guest", "wit_world", "componentize_py_types", "componentize_py_runtime"):
        raise BuildError(f"a tool module cannot be called `{name}`: rename {path.name}")
    return name


def load_tool(path: Path):  # -> (ToolSpec, uses_http)
    """Imports the tool's module on this Python and returns its registered
    tool and whether it uses `cofferdam_guest.http`."""
    sys.dont_write_bytecode = True  # leave no __pycache__ beside the tool
    module = _module_name(path)
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    from . import handler as tool_module

    tool_module._reset_registry()
    sys.modules.pop(module, None)
    # Whether the tool imports the HTTP client is read from sys.modules
    # after the import, so start from a package that has not loaded it.
    package = sys.modules[__package__]
    sys.modules.pop(f"{__package__}.http", None)
    if "http" in vars(package):
        delattr(package, "http")
    from .errors import SchemaError

    try:
        importlib.import_module(module)
    except SchemaError as e:
        raise BuildError(f"{path}: {e}") from None
    except Exception as e:
        raise BuildError(f"{path}: importing the module failed: {type(e).__name__}: {e}") from e
    try:
        spec = tool_module.registered()
    except SchemaError as e:
        raise BuildError(f"{path}: {e}") from None
    return spec, "cofferdam_guest.http" in sys.modules


def _stage(stage: Path, module: str, wit: Path, uses_http: bool) -> tuple[Path, str, list[str]]:
    """Writes the entry module, the SDK copy and the WIT; returns the WIT
    path, the world and the extra componentize-py flags."""
    (stage / "app").mkdir()
    (stage / "app" / f"{_ENTRY}.py").write_text(
        "# Generated by cofferdam-py build: the component's entry module.\n"
        "import sys\n"
        "sys.dont_write_bytecode = True\n"
        f"import {module}  # registers the tool (@tool)\n"
        "from cofferdam_guest._component import WitWorld  # the exports\n",
        encoding="utf-8",
    )
    shutil.copytree(
        _PACKAGE_DIR,
        stage / "app" / "cofferdam_guest",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wit"),
    )
    # componentize-py adds a site-packages to the path; give it an empty one.
    (stage / "venv" / "lib" / "site-packages").mkdir(parents=True)
    names = ["--import-interface-name", "cofferdam:tool/types@0.1.0=tool_types"]
    if not uses_http:
        return wit, "tool", names
    http_wit = stage / "wit"
    deps = http_wit / "deps"
    deps.mkdir(parents=True)
    shutil.copy(_PACKAGE_DIR / "wit" / "tool-http.wit", http_wit / "tool-http.wit")
    for f in sorted((_PACKAGE_DIR / "wit" / "deps").glob("*.wit")):
        shutil.copy(f, deps / f.name)
    (deps / "cofferdam-tool").mkdir()
    shutil.copy(wit / "tool.wit", deps / "cofferdam-tool" / "tool.wit")
    for dep in sorted((wit / "deps").iterdir()):
        if dep.is_dir():
            shutil.copytree(dep, deps / dep.name)
        else:
            shutil.copy(dep, deps / dep.name)
    names += ["--import-interface-name", f"wasi:http/types@{HTTP_VERSION}=http_types"]
    return http_wit, "cofferdam:python-guest/tool-http@0.1.0", names


def build(path: Path, output: Path, wit_dir: Optional[str], quiet: bool) -> int:
    started = time.monotonic()
    command = _componentize_py()
    wit = find_wit(wit_dir)
    path = path.resolve()
    if not path.is_file():
        raise BuildError(f"{path} does not exist")
    spec, uses_http = load_tool(path)
    module = _module_name(path)
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cofferdam-py-") as tmp:
        stage = Path(tmp)
        wit_path, world, names = _stage(stage, module, wit, uses_http)
        partial = stage / "out.wasm"
        args = [
            *command,
            "-d", str(wit_path),
            "-w", world,
            *names,
            "-q",
            "componentize", _ENTRY,
            "-p", str(stage / "app"),
            "-p", str(path.parent),
            "-o", str(partial),
        ]  # fmt: skip
        env = dict(os.environ)
        env["VIRTUAL_ENV"] = str(stage / "venv")
        env.pop("PYTHONPATH", None)
        if not quiet:
            print(
                f"building tool `{spec.name}` {spec.version} ({spec.effect.value}) "
                f"for world `{world}` with componentize-py {COMPONENTIZE_PY_VERSION}",
                file=sys.stderr,
            )
        result = subprocess.run(args, env=env, cwd=stage, capture_output=True, text=True)
        if result.returncode != 0 or not partial.is_file():
            detail = _trim(result.stderr or result.stdout)
            raise BuildError(f"componentize-py failed for {path}:\n{detail}")
        shutil.move(str(partial), str(output))
    if not quiet:
        size = output.stat().st_size
        print(
            f"wrote {output} ({size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    return 0


def _trim(text: str, limit: int = 60) -> str:
    """componentize-py's message without its Rust and C backtrace."""
    lines = text.splitlines()
    cut = next((i for i, line in enumerate(lines) if line.strip() == "Stack backtrace:"), len(lines))
    lines = lines[:cut]
    return "\n".join(lines[-limit:]).rstrip()


def describe(path: Path, wit_dir: Optional[str]) -> int:
    spec, uses_http = load_tool(path.resolve())
    from .handler import describe as describe_tool

    info = describe_tool(spec)
    info["input_schema"] = json.loads(info["input_schema"])
    info["effect"] = spec.effect.value
    info["http"] = uses_http
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cofferdam-py",
        description="Build Python cofferdam tools into WebAssembly components.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="package a tool module into a component")
    b.add_argument("tool", type=Path, help="the tool's module (a .py file with one @tool)")
    b.add_argument("-o", "--output", type=Path, help="the component to write [default: TOOL.wasm]")
    b.add_argument("--wit", help="the cofferdam `wit` directory [default: $COFFERDAM_WIT, or the checkout's]")
    b.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    d = sub.add_parser("describe", help="print the tool's name, description and input schema")
    d.add_argument("tool", type=Path)
    d.add_argument("--wit", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            output = args.output or args.tool.with_suffix(".wasm")
            return build(args.tool, output, args.wit, args.quiet)
        return describe(args.tool, args.wit)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

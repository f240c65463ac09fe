"""Tries to read outside its mount and reports what happened.

Each path in `paths` is read; a denial is reported as `{"ok": false, ...}`
(the guest saw the host refuse it) rather than raised, so one call shows
every attempt. With `raise_first`, the first failure is raised instead, to
show the error class the SDK gives it.
"""

from dataclasses import dataclass, field
from typing import Optional

from cofferdam_guest import tool

DEFAULT_PATHS = ["/data/../../etc/passwd", "../etc/passwd", "/etc/passwd", "/data/../secret.txt"]


@dataclass
class Input:
    paths: list[str] = field(default_factory=lambda: list(DEFAULT_PATHS))
    """Paths to try to read."""
    raise_first: bool = False
    """Raise the first failure instead of reporting it."""


@dataclass
class Attempt:
    path: str
    ok: bool
    text: Optional[str] = None
    error: Optional[str] = None


@tool
def escape(input: Input) -> list[Attempt]:
    """Reads paths that lie outside the mount (it must not succeed)."""
    out = []
    for path in input.paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                out.append(Attempt(path, True, text=f.read(200)))
        except OSError as e:
            if input.raise_first:
                raise
            out.append(Attempt(path, False, error=f"{type(e).__name__}: {e}"))
    return out

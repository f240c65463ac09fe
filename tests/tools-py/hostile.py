"""Every hostile case in one component, chosen by `mode`, so the host's
integration tests compile one Python component instead of four:

- `spin`: loops forever (fuel or the deadline must stop it);
- `membomb`: allocates until it dies (the memory cap must stop it);
- `escape`: reads `path`, which lies outside the mount (the host must refuse);
- `raise`: raises the exception `kind` names (each maps to a tool error).
"""

from dataclasses import dataclass
from typing import Literal

from cofferdam_guest import InvalidInput, Permanent, RateLimited, Transient, tool


@dataclass
class Input:
    mode: Literal["spin", "membomb", "escape", "raise"]
    """What to do."""
    path: str = "/data/../secret.txt"
    """For `escape`: the path to read."""
    kind: Literal["invalid-input", "transient", "rate-limited", "permanent", "value-error"] = "permanent"
    """For `raise`: which exception."""


@tool(name="py-hostile")
def hostile(input: Input) -> dict:
    """Test tool: spins, hoards memory, reads outside its mount or raises, as asked."""
    if input.mode == "spin":
        while True:
            pass
    if input.mode == "membomb":
        hoard = []
        while True:
            hoard.append(bytearray(8 << 20))
    if input.mode == "escape":
        with open(input.path, encoding="utf-8") as f:
            return {"read": f.read(200)}
    if input.kind == "invalid-input":
        raise InvalidInput("as asked")
    if input.kind == "transient":
        raise Transient("as asked")
    if input.kind == "rate-limited":
        raise RateLimited(1500)
    if input.kind == "permanent":
        raise Permanent("as asked")
    raise ValueError("as asked")

"""Counts its calls in the tool's durable state (`ctx.state()`, wasi:keyvalue).

Used to check the state API end to end: needs `[state] bucket = "..."` in the
tool's policy; without it every call is `permanent` (no state granted).
"""

from dataclasses import dataclass
from typing import Optional

from cofferdam_guest import Context, Effect, tool


@dataclass
class Input:
    note: Optional[str] = None
    """Remembered as the last note."""
    reset: bool = False
    """Delete every key first."""


@tool(effect=Effect.IDEMPOTENT)
def counter(input: Input, ctx: Context) -> dict:
    """Counts calls and remembers the notes it was given."""
    state = ctx.state()
    if input.reset:
        for key in state.keys():
            state.delete(key)
    calls = state.increment("calls")
    notes = state.get("notes", [])
    if input.note is not None:
        notes.append(input.note)
        state.set("notes", notes)
    return {"calls": calls, "notes": notes, "keys": state.keys()}

"""Raises the exception its input names, to show how each maps to a tool error."""

from dataclasses import dataclass
from typing import Literal

from cofferdam_guest import InvalidInput, Permanent, RateLimited, Transient, tool


@dataclass
class Input:
    kind: Literal["invalid-input", "transient", "rate-limited", "permanent", "value-error", "file-not-found", "none"]
    """Which exception to raise (`none` returns normally)."""
    message: str = "as asked"


@tool
def raiser(input: Input) -> dict:
    """Raises the exception named by `kind`."""
    if input.kind == "invalid-input":
        raise InvalidInput(input.message)
    if input.kind == "transient":
        raise Transient(input.message)
    if input.kind == "rate-limited":
        raise RateLimited(1500)
    if input.kind == "permanent":
        raise Permanent(input.message)
    if input.kind == "value-error":
        raise ValueError(input.message)
    if input.kind == "file-not-found":
        open("/nowhere/at/all.txt")
    return {"raised": None}

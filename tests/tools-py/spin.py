"""Loops forever: the host must stop it by fuel (`--fuel`) or deadline (`--timeout`)."""

from dataclasses import dataclass

from cofferdam_guest import tool


@dataclass
class Input:
    pass


@tool
def spin(input: Input) -> None:
    """Never returns."""
    while True:
        pass

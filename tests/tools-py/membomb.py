"""Allocates until it dies: the host's memory cap must stop it, with its typed error."""

from dataclasses import dataclass

from cofferdam_guest import tool


@dataclass
class Input:
    chunk_mib: int = 8
    """How much to allocate per step."""


@tool
def membomb(input: Input) -> int:
    """Holds ever more memory and never returns."""
    hoard = []
    while True:
        hoard.append(bytearray(input.chunk_mib << 20))

"""The call context a tool function may take, and the host services behind it.

`Context` talks to the host through a small `HostApi` object: inside a
component that is the generated `cofferdam:tool/host` binding (set by
`_component`), in unit tests a fake. This module does not import the
generated bindings, so it loads on any Python.
"""

from __future__ import annotations

import enum
from typing import Any, Optional, Protocol

from .state import State

__all__ = ["Effect", "Level", "Context", "HostApi"]


class Effect(enum.Enum):
    """What calling a tool does to the world; the host retries and journals by it."""

    #: No side effects: safe to retry and to run twice.
    PURE = "pure"
    #: Side effects that are safe to repeat with the same input.
    IDEMPOTENT = "idempotent"
    #: Side effects that must happen at most once.
    SIDE_EFFECTING = "side-effecting"


class Level(enum.Enum):
    """Severity of a log record sent to the host."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class HostApi(Protocol):
    """What `Context` needs from the host (the WIT `host` interface)."""

    def log(self, level: Level, message: str) -> None: ...
    def progress(self, done: int, total: Optional[int], message: str) -> None: ...
    def remaining_budget(self) -> int: ...
    def open_state(self) -> Any: ...


class Context:
    """The call in progress: its identity, and the host services a tool may use.

    A tool function receives one when it declares a parameter annotated
    `Context`. It is valid only during the call it was made for.
    """

    __slots__ = ("_call_id", "_task_id", "_attempt", "_deadline_ms", "_host")

    def __init__(
        self,
        call_id: str,
        task_id: Optional[str],
        attempt: int,
        deadline_ms: int,
        host: HostApi,
    ) -> None:
        self._call_id = call_id
        self._task_id = task_id
        self._attempt = attempt
        self._deadline_ms = deadline_ms
        self._host = host

    @property
    def call_id(self) -> str:
        """Unique id of this call, the same for every attempt."""
        return self._call_id

    @property
    def task_id(self) -> Optional[str]:
        """The task this call is a step of, if any."""
        return self._task_id

    @property
    def attempt(self) -> int:
        """Attempt number, starting at 1."""
        return self._attempt

    @property
    def deadline_ms(self) -> int:
        """Milliseconds the host allowed for this call when it started."""
        return self._deadline_ms

    def log(self, level: Level | str, message: str) -> None:
        """Records a log line on the call's outcome. The host bounds how many it keeps."""
        if isinstance(level, str):
            try:
                level = Level(level.lower())
            except ValueError:
                raise ValueError(
                    f"unknown log level `{level}`: use trace, debug, info, warn or error"
                ) from None
        self._host.log(level, str(message))

    def log_trace(self, message: str) -> None:
        """Shorthand for `log(Level.TRACE, message)`."""
        self.log(Level.TRACE, message)

    def log_debug(self, message: str) -> None:
        """Shorthand for `log(Level.DEBUG, message)`."""
        self.log(Level.DEBUG, message)

    def log_info(self, message: str) -> None:
        """Shorthand for `log(Level.INFO, message)`."""
        self.log(Level.INFO, message)

    def log_warn(self, message: str) -> None:
        """Shorthand for `log(Level.WARN, message)`."""
        self.log(Level.WARN, message)

    def log_error(self, message: str) -> None:
        """Shorthand for `log(Level.ERROR, message)`."""
        self.log(Level.ERROR, message)

    def progress(self, done: int, total: Optional[int] = None, message: str = "") -> None:
        """Reports progress of a long call; the host forwards it (for example
        as MCP progress notifications). `total` is unknown when `None`."""
        if done < 0 or (total is not None and total < 0):
            raise ValueError("progress counts cannot be negative")
        self._host.progress(int(done), None if total is None else int(total), str(message))

    def remaining_budget(self) -> int:
        """Tokens this call may still spend, derived from the fuel it has left."""
        return self._host.remaining_budget()

    def state(self) -> State:
        """The tool's durable key-value state (the bucket its policy grants).

        Raises `Permanent` when the host grants no state to this tool.
        """
        return State(self._host)

    def __repr__(self) -> str:
        return (
            f"Context(call_id={self._call_id!r}, task_id={self._task_id!r}, "
            f"attempt={self._attempt}, deadline_ms={self._deadline_ms})"
        )

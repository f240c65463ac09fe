"""Tool errors: the exceptions a tool raises, and how any exception maps to
the WIT `tool-error` the host acts on.

The case, not the message, decides what the host does next: `InvalidInput`
is never retried, `Transient` and `RateLimited` may be, `Permanent` is not.
This module does not talk to the host; `_component` turns the mapped case
into the generated WIT value.
"""

from __future__ import annotations

import errno

__all__ = [
    "ToolError",
    "InvalidInput",
    "Transient",
    "RateLimited",
    "Permanent",
    "SchemaError",
    "to_tool_error",
]

_U32_MAX = 2**32 - 1


class ToolError(Exception):
    """An error the tool reports to the host; raise one of its subclasses."""

    #: The WIT case name: `invalid-input`, `transient`, `rate-limited` or `permanent`.
    case: str = "permanent"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


class InvalidInput(ToolError):
    """The caller's fault (bad arguments, a path that does not exist); never retried."""

    case = "invalid-input"


class Transient(ToolError):
    """An upstream hiccup worth retrying with backoff."""

    case = "transient"


class RateLimited(ToolError):
    """Upstream asked to slow down: retry after `retry_after_ms` milliseconds."""

    case = "rate-limited"

    def __init__(self, retry_after_ms: int) -> None:
        if isinstance(retry_after_ms, bool) or not isinstance(retry_after_ms, (int, float)):
            raise TypeError(
                f"RateLimited takes milliseconds as a number, not {type(retry_after_ms).__name__}"
            )
        ms = min(max(int(retry_after_ms), 0), _U32_MAX)
        super().__init__(f"rate limited, retry after {ms} ms")
        self.retry_after_ms = ms


class Permanent(ToolError):
    """A failure that a retry will not fix."""

    case = "permanent"


class SchemaError(TypeError):
    """A tool's input type cannot be expressed as JSON Schema.

    Raised when the module defining the tool is imported, which
    `cofferdam-py build` does before packaging, so the build fails instead
    of the tool describing a wrong schema.
    """


# OS errors map by kind, as the Rust SDK maps `std::io::Error`: a missing or
# forbidden path is the caller's fault, interruptions and timeouts are
# transient, the rest permanent. A path outside every mount fails like a
# missing or forbidden file, so it is invalid input too.
_INVALID_INPUT_ERRNOS = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.EEXIST,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EINVAL,
    errno.ENAMETOOLONG,
    errno.ENOTCAPABLE if hasattr(errno, "ENOTCAPABLE") else errno.EACCES,
}
_TRANSIENT_ERRNOS = {
    errno.EINTR,
    errno.ETIMEDOUT,
    errno.EAGAIN,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.EPIPE,
}


def _oserror_case(error: OSError) -> str:
    if error.errno in _INVALID_INPUT_ERRNOS:
        return "invalid-input"
    if error.errno in _TRANSIENT_ERRNOS:
        return "transient"
    if isinstance(
        error,
        (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError),
    ):
        return "invalid-input"
    if isinstance(error, (InterruptedError, TimeoutError, BlockingIOError, ConnectionError)):
        return "transient"
    return "permanent"


def _describe(error: BaseException) -> str:
    name = type(error).__name__
    text = str(error)
    return f"{name}: {text}" if text else name


def to_tool_error(error: BaseException) -> tuple[str, str | int]:
    """The WIT case and payload for any exception.

    A `ToolError` keeps its case and message (`rate-limited` carries the
    milliseconds). An `OSError` maps by kind. Anything else is `permanent`
    with the exception's type and message, so a bug in a tool is reported,
    never a trap.
    """
    if isinstance(error, RateLimited):
        return "rate-limited", error.retry_after_ms
    if isinstance(error, ToolError):
        return error.case, error.message
    if isinstance(error, OSError):
        return _oserror_case(error), _describe(error)
    if isinstance(error, ImportError):
        return "permanent", (
            f"{_describe(error)} (a component cannot import modules during a call: "
            "import it at the top of the tool's module)"
        )
    return "permanent", _describe(error)

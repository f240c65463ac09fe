"""The component's exports: binds `handler.describe`/`handler.invoke` to the
bindings componentize-py generates for the WIT world `tool`.

Only importable inside a component build (it imports `wit_world`, which
componentize-py generates at build time); `cofferdam-py build` makes the
component's entry module import it after the tool's module. The build pins
the generated module names (`--import-interface-name`), so this file does
not depend on whether `wasi:http` is in the world.
"""

from __future__ import annotations

from typing import Any, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import atomics as _atomics
from wit_world.imports import host as _host
from wit_world.imports import store as _store
from wit_world.imports import tool_types as _types

# Standard modules that the standard library itself imports lazily, during a
# call (codec lookups, `datetime.strptime`). A component cannot import
# anything after it is built, so they are loaded into the snapshot here.
import _strptime  # noqa: F401,E402
import encodings.ascii  # noqa: F401,E402
import encodings.cp1252  # noqa: F401,E402
import encodings.latin_1  # noqa: F401,E402
import encodings.utf_16  # noqa: F401,E402
import encodings.utf_32  # noqa: F401,E402
import encodings.utf_8_sig  # noqa: F401,E402

from . import handler as _tool
from .context import Effect, Level
from .state import StoreError

_EFFECTS = {
    Effect.PURE: _types.Effect.PURE,
    Effect.IDEMPOTENT: _types.Effect.IDEMPOTENT,
    Effect.SIDE_EFFECTING: _types.Effect.SIDE_EFFECTING,
}
_LEVELS = {
    Level.TRACE: _types.Level.TRACE,
    Level.DEBUG: _types.Level.DEBUG,
    Level.INFO: _types.Level.INFO,
    Level.WARN: _types.Level.WARN,
    Level.ERROR: _types.Level.ERROR,
}
_ERRORS = {
    "invalid-input": _types.ToolError_InvalidInput,
    "transient": _types.ToolError_Transient,
    "rate-limited": _types.ToolError_RateLimited,
    "permanent": _types.ToolError_Permanent,
}

# Fail the build (this runs at pre-initialization) if no tool was registered.
_SPEC = _tool.registered()


def _store_error(err: Err) -> StoreError:
    value = err.value
    if isinstance(value, _store.Error_NoSuchStore):
        return StoreError("no-such-store")
    if isinstance(value, _store.Error_AccessDenied):
        return StoreError("access-denied")
    return StoreError("other", str(getattr(value, "value", value)))


class _Bucket:
    """`state.Bucket` over the generated `wasi:keyvalue` bindings."""

    def __init__(self, bucket: Any) -> None:
        self._bucket = bucket

    def get(self, key: str) -> Optional[bytes]:
        try:
            return self._bucket.get(key)
        except Err as e:
            raise _store_error(e) from None

    def set(self, key: str, value: bytes) -> None:
        try:
            self._bucket.set(key, value)
        except Err as e:
            raise _store_error(e) from None

    def delete(self, key: str) -> None:
        try:
            self._bucket.delete(key)
        except Err as e:
            raise _store_error(e) from None

    def increment(self, key: str, delta: int) -> int:
        try:
            return _atomics.increment(self._bucket, key, delta)
        except Err as e:
            raise _store_error(e) from None

    def list_keys(self, cursor: Optional[int]) -> tuple[list[str], Optional[int]]:
        try:
            page = self._bucket.list_keys(cursor)
        except Err as e:
            raise _store_error(e) from None
        return list(page.keys), page.cursor

    def close(self) -> None:
        self._bucket.__exit__(None, None, None)


class _Host:
    """`context.HostApi` over `cofferdam:tool/host`; owns the call's buckets."""

    def __init__(self) -> None:
        self._buckets: list[_Bucket] = []

    def log(self, level: Level, message: str) -> None:
        _host.log(_LEVELS[level], message)

    def progress(self, done: int, total: Optional[int], message: str) -> None:
        _host.progress(done, total, message)

    def remaining_budget(self) -> int:
        return _host.remaining_budget()

    def open_state(self) -> _Bucket:
        try:
            bucket = _Bucket(_store.open(""))
        except Err as e:
            raise _store_error(e) from None
        self._buckets.append(bucket)
        return bucket

    def close(self) -> None:
        # Handles are dropped when the call ends, so a warm instance carries
        # none into its next call.
        for bucket in self._buckets:
            try:
                bucket.close()
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._buckets.clear()


class WitWorld(wit_world.WitWorld):
    """The exports componentize-py wires to the component's `describe` and `invoke`."""

    def describe(self) -> Any:
        info = _tool.describe(_SPEC)
        return _types.ToolInfo(
            name=info["name"],
            version=info["version"],
            description=info["description"],
            input_schema=info["input_schema"],
            effect=_EFFECTS[info["effect"]],
        )

    def invoke(self, ctx: Any, input: str) -> str:
        host = _Host()
        try:
            outcome = _tool.invoke(
                _SPEC,
                input,
                call_id=ctx.call_id,
                task_id=ctx.task_id,
                attempt=ctx.attempt,
                deadline_ms=ctx.deadline_ms,
                host=host,
            )
        finally:
            host.close()
        if outcome.case == "ok":
            return outcome.payload
        raise Err(_ERRORS[outcome.case](outcome.payload))

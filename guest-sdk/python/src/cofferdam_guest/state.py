"""Durable key-value state between calls, over `wasi:keyvalue`.

```python
@tool()
def count(item: Item, ctx: Context) -> dict:
    state = ctx.state()
    seen = state.get("seen", [])
    state.set("seen", seen + [item.name])
    runs = state.increment("runs")
    ...
```

The host grants one bucket per tool (`[tools.NAME.state]` in its config)
and decides whose keys a call sees (per owner, per schedule or per tool).
Writes take effect when the call succeeds: a failed attempt's writes are
dropped, and a call replayed from the journal writes nothing. Values are
JSON; counters are decimal text, as in the Rust SDK (`guest-sdk/src/state.rs`).

This module does not import the generated bindings: it works over a
`Bucket` adapter (the real one is in `_component`), so it can be tested
on any Python.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Protocol

from .errors import InvalidInput, Permanent, ToolError
from .output import to_json_text

__all__ = ["State", "StoreError", "Bucket"]



class StoreError(Exception):
    """What a `wasi:keyvalue` call failed with: `kind` is `no-such-store`,
    `access-denied` or `other` (with the host's message)."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message


class Bucket(Protocol):
    """The `wasi:keyvalue` operations `State` uses; each raises `StoreError`."""

    def get(self, key: str) -> Optional[bytes]: ...
    def set(self, key: str, value: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def increment(self, key: str, delta: int) -> int: ...
    def list_keys(self, cursor: Optional[int]) -> tuple[list[str], Optional[int]]: ...


def _tool_error(error: StoreError) -> ToolError:
    if error.kind == "no-such-store":
        return Permanent("no such state bucket: the tool's policy grants another")
    if error.kind == "access-denied":
        return Permanent(
            "no state is granted to this tool (or to this call's scope): "
            "add [tools.NAME.state] to the host's config"
        )
    # The caller's scope is full: its fault, not the tool's, so it is not
    # retried and does not count against the tool's breaker.
    if error.message.startswith(("state-quota-exceeded", "state-too-many-writes")):
        return InvalidInput(error.message)
    return Permanent(error.message or error.kind)


class State:
    """The tool's state bucket; from `Context.state()`."""

    __slots__ = ("_bucket",)

    def __init__(self, host: Any) -> None:
        try:
            self._bucket: Bucket = host.open_state()
        except StoreError as e:
            raise _tool_error(e) from None

    def get(self, key: str, default: Any = None) -> Any:
        """The JSON value of `key`, or `default` when it is not set."""
        try:
            raw = self._bucket.get(key)
        except StoreError as e:
            raise _tool_error(e) from None
        if raw is None:
            return default
        try:
            return json.loads(bytes(raw).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise Permanent(f"state key `{key}` holds other data: {e}") from None

    def set(self, key: str, value: Any) -> None:
        """Sets `key` to `value` (as JSON). Fails with `InvalidInput` when the
        bucket's quota would be exceeded (`state-quota-exceeded`), writing nothing."""
        try:
            data = to_json_text(value).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise Permanent(f"cannot encode state key `{key}`: {e}") from None
        try:
            self._bucket.set(key, data)
        except StoreError as e:
            raise _tool_error(e) from None

    def delete(self, key: str) -> None:
        """Removes `key` (removing an absent key is fine)."""
        try:
            self._bucket.delete(key)
        except StoreError as e:
            raise _tool_error(e) from None

    def increment(self, key: str, delta: int = 1) -> int:
        """Adds `delta` (0 or more) to the counter `key` (absent counts as 0)
        and returns its new value. Concurrent calls' increments all count."""
        if isinstance(delta, bool) or not isinstance(delta, int) or not 0 <= delta < 2**64:
            raise ValueError("increment takes a delta from 0 to 2**64 - 1")
        try:
            return self._bucket.increment(key, delta)
        except StoreError as e:
            raise _tool_error(e) from None

    def keys(self) -> list[str]:
        """Every key, in the order the host lists them."""
        keys: list[str] = []
        cursor: Optional[int] = None
        while True:
            try:
                page, cursor = self._bucket.list_keys(cursor)
            except StoreError as e:
                raise _tool_error(e) from None
            keys.extend(page)
            if cursor is None:
                return keys

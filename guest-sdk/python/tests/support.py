"""Test helpers: a fake host that records what a tool sent it."""

from __future__ import annotations

from typing import Any, Optional

from cofferdam_guest.state import StoreError


class FakeBucket:
    """An in-memory `wasi:keyvalue` bucket; `fail` makes every call raise."""

    def __init__(self, fail: Optional[StoreError] = None, page: int = 2) -> None:
        self.data: dict[str, bytes] = {}
        self.fail = fail
        self.page = page

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def get(self, key: str) -> Optional[bytes]:
        self._check()
        return self.data.get(key)

    def set(self, key: str, value: bytes) -> None:
        self._check()
        self.data[key] = value

    def delete(self, key: str) -> None:
        self._check()
        self.data.pop(key, None)

    def increment(self, key: str, delta: int) -> int:
        self._check()
        value = int(self.data.get(key, b"0")) + delta
        self.data[key] = str(value).encode()
        return value

    def list_keys(self, cursor: Optional[int]) -> tuple[list[str], Optional[int]]:
        self._check()
        keys = sorted(self.data)
        start = cursor or 0
        end = start + self.page
        return keys[start:end], (end if end < len(keys) else None)


class FakeHost:
    def __init__(self, bucket: Any = None, open_error: Optional[StoreError] = None) -> None:
        self.logs: list[tuple[str, str]] = []
        self.progress_calls: list[tuple[int, Optional[int], str]] = []
        self.bucket = bucket if bucket is not None else FakeBucket()
        self.open_error = open_error
        self.budget = 1234

    def log(self, level: Any, message: str) -> None:
        self.logs.append((level.value, message))

    def progress(self, done: int, total: Optional[int], message: str) -> None:
        self.progress_calls.append((done, total, message))

    def remaining_budget(self) -> int:
        return self.budget

    def open_state(self) -> Any:
        if self.open_error is not None:
            raise self.open_error
        return self.bucket

"""Turns a tool's return value into JSON text.

Dataclasses become objects (field order kept), enums their values, tuples
lists; dicts must have string keys. NaN and infinities are refused, since
JSON has no such numbers. It does not validate the output against any
schema: the output is the tool's own business.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

__all__ = ["to_jsonable", "to_json_text"]


def to_jsonable(value: Any, _path: str = "") -> Any:
    """A structure of dict, list, str, int, float, bool and None equal to `value`.

    Raises `TypeError` naming where in the value an unsupported object is.
    """
    where = _path or "the value"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, which JSON cannot hold")
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name), f"{_path}.{f.name}" if _path else f.name)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, enum.Enum):
                key = key.value
            if not isinstance(key, str):
                raise TypeError(f"{where} has a key {key!r} that is not a string")
            out[key] = to_jsonable(item, f"{_path}.{key}" if _path else key)
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, f"{_path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where} is a {type(value).__name__}, which has no JSON form")


def to_json_text(value: Any) -> str:
    """Compact JSON text for `value` (see `to_jsonable`)."""
    return json.dumps(
        to_jsonable(value), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )

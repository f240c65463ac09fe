"""`csv_summary`: summarizes a CSV file on a read-only mount.

The tool sees only what its policy mounts; it expects the files at `/data`.
It reports the row count, the columns, and min / max / mean of every column
whose values are all numbers. Build and run it from the repository root:

    python3 -m pip install componentize-py==0.25.1
    PYTHONPATH=guest-sdk/python/src python3 -m cofferdam_guest build \
        examples/csv-summary/csv_summary.py -o target/python/csv_summary.wasm
    cofferdam run target/python/csv_summary.wasm \
        --mount examples/csv-summary/sample:/data:ro --input '{"path":"cities.csv"}'

A path that leaves `/data` is refused before any file is opened; one that
does not exist is the caller's fault too (`invalid-input`).
"""

import csv
import io
import math
import posixpath
from dataclasses import dataclass, field
from typing import Optional

from cofferdam_guest import Context, InvalidInput, tool

ROOT = "/data"


@dataclass
class Input:
    """Which CSV file to summarize."""

    path: str
    """File below `/data`, such as `sales/2024.csv` (a leading `/data/` is accepted)."""
    delimiter: str = ","
    """The field separator: one character."""
    max_rows: Optional[int] = None
    """Stop after this many data rows (all rows by default)."""


@dataclass
class Column:
    name: str
    numeric: bool
    non_empty: int
    min: Optional[float] = None
    max: Optional[float] = None
    mean: Optional[float] = None


@dataclass
class Summary:
    path: str
    rows: int
    columns: list[Column] = field(default_factory=list)
    truncated: bool = False


def resolve(path: str) -> str:
    """The absolute path below ROOT that `path` names, or InvalidInput."""
    relative = path[len(ROOT) + 1 :] if path.startswith(ROOT + "/") else path
    if relative.startswith("/"):
        raise InvalidInput(f"`path` must be below {ROOT}: {path!r} is not")
    full = posixpath.normpath(posixpath.join(ROOT, relative))
    if full != ROOT and not full.startswith(ROOT + "/"):
        raise InvalidInput(f"`path` must stay below {ROOT}: {path!r} leaves it")
    return full


def number(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@tool
def csv_summary(input: Input, ctx: Context) -> Summary:
    """Summarizes a CSV file below /data: row count, column names, and min, max
    and mean of each numeric column."""
    if len(input.delimiter) != 1:
        raise InvalidInput("`delimiter` must be one character")
    if input.max_rows is not None and input.max_rows < 0:
        raise InvalidInput("`max_rows` must not be negative")
    full = resolve(input.path)
    # A missing file or a directory raises OSError, which the SDK reports as
    # invalid-input (the caller named it); the host denies paths off the mount.
    with open(full, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    reader = csv.reader(io.StringIO(text), delimiter=input.delimiter)
    header = next(reader, None)
    if header is None:
        raise InvalidInput(f"{input.path} is empty: a CSV file needs a header row")
    names = [h.strip() for h in header]
    counts = [0] * len(names)
    sums = [0.0] * len(names)
    mins: list[Optional[float]] = [None] * len(names)
    maxs: list[Optional[float]] = [None] * len(names)
    numeric = [True] * len(names)
    rows = 0
    truncated = False
    for record in reader:
        if not record:
            continue  # a blank line is not a row
        if input.max_rows is not None and rows == input.max_rows:
            truncated = True
            break
        rows += 1
        for i, cell in enumerate(record[: len(names)]):
            cell = cell.strip()
            if not cell:
                continue
            counts[i] += 1
            if not numeric[i]:
                continue
            value = number(cell)
            if value is None:
                numeric[i] = False
                continue
            sums[i] += value
            mins[i] = value if mins[i] is None else min(mins[i], value)
            maxs[i] = value if maxs[i] is None else max(maxs[i], value)
        if rows % 10000 == 0:
            ctx.progress(rows, None, f"read {rows} rows")
    columns = []
    for i, name in enumerate(names):
        is_numeric = numeric[i] and counts[i] > 0
        columns.append(
            Column(
                name=name,
                numeric=is_numeric,
                non_empty=counts[i],
                min=mins[i] if is_numeric else None,
                max=maxs[i] if is_numeric else None,
                mean=sums[i] / counts[i] if is_numeric else None,
            )
        )
    ctx.log_info(f"summarized {rows} rows of {full}")
    return Summary(path=full, rows=rows, columns=columns, truncated=truncated)

"""Read an interaction CSV/TSV file in the contract's form, with one-line errors that name the file and line.

The header must name ``user_id``, ``item_id``, ``rating`` and ``timestamp`` (any order, other columns ignored).
The delimiter is a tab when the header line contains one, else a comma. An empty rating is an implicit event
(NaN); the timestamp is in epoch seconds.

Examples
--------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "events.csv")
>>> _ = open(path, "w").write("user_id,item_id,rating,timestamp\\nu1,i9,4,10\\nu2,i9,,11\\n")
>>> users, items, ratings, ts, fingerprint = read_events_csv(path)
>>> list(users), list(items), ratings.tolist()[0], bool(ratings[1] != ratings[1]), ts.tolist()
(['u1', 'u2'], ['i9', 'i9'], 4.0, True, [10.0, 11.0])
"""
from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from adapters.errors import MetarecError

REQUIRED = ("user_id", "item_id", "rating", "timestamp")


def read_events_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Parse ``path`` in file order.

    Returns
    -------
    user_ids, item_ids : np.ndarray of object (str), [E]
    ratings : np.ndarray float32 [E] (NaN = implicit)
    timestamps : np.ndarray float64 [E]
    fingerprint : str
        sha256 of the file's bytes.

    Raises
    ------
    MetarecError
        Missing/unreadable file, not UTF-8, header without the required columns, a short row, an empty id,
        a non-numeric rating or timestamp (naming the line), or no events at all.
    """
    path = Path(path)
    text, fingerprint = _read_text(path)
    reader, first, columns = _reader(path, text)
    iu, ii, ir, it = columns
    width = max(columns) + 1
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[float] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        lineno = first + reader.line_num
        if len(row) < width:
            raise MetarecError(f"{path}: line {lineno}: expected at least {width} fields, found {len(row)}")
        u, i, r, t = row[iu].strip(), row[ii].strip(), row[ir].strip(), row[it].strip()
        if not u or not i:
            raise MetarecError(f"{path}: line {lineno}: empty {'user_id' if not u else 'item_id'}")
        users.append(u)
        items.append(i)
        ratings.append(_rating(path, lineno, r))
        stamps.append(_timestamp(path, lineno, t))
    if not users:
        raise MetarecError(f"{path}: no events after the header")
    return (np.array(users, dtype=object), np.array(items, dtype=object), np.array(ratings, dtype=np.float32),
            np.array(stamps, dtype=np.float64), fingerprint)


def _read_text(path: Path) -> tuple[str, str]:
    """The file's text (UTF-8, a BOM dropped) and the sha256 of its bytes."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MetarecError(f"{path}: no such file (expected a dataset name ml-100k, ml-1m, or a CSV/TSV path)") from None
    except OSError as exc:
        raise MetarecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    fingerprint = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MetarecError(f"{path}: line {line}: not UTF-8 text") from None
    return text, fingerprint


def _reader(path: Path, text: str) -> tuple[Any, int, tuple[int, int, int, int]]:
    """A CSV reader positioned after the header, the header's 0-based line index, and the column index of each
    :data:`REQUIRED` column (in that order)."""
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise MetarecError(f"{path}: empty file (expected a header user_id,item_id,rating,timestamp)")
    delimiter = "\t" if "\t" in lines[first] else ","
    reader = csv.reader(lines[first:], delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        sep = "tab" if delimiter == "\t" else "comma"
        raise MetarecError(f"{path}: line {first + 1}: header ({sep}-separated) lacks column(s) {', '.join(missing)}; "
                           f"it must name user_id,item_id,rating,timestamp")
    iu, ii, ir, it = (header.index(c) for c in REQUIRED)
    return reader, first, (iu, ii, ir, it)


def _rating(path: Path, lineno: int, r: str) -> float:
    """The rating field as a float (NaN for an empty field: an implicit event)."""
    if not r:
        return math.nan
    try:
        rv = float(r)
    except ValueError:
        raise MetarecError(f"{path}: line {lineno}: rating {r[:40]!r} is not a number") from None
    if not math.isfinite(rv):
        raise MetarecError(f"{path}: line {lineno}: rating {r[:40]!r} is not a finite number")
    return rv


def _timestamp(path: Path, lineno: int, t: str) -> float:
    """The timestamp field as float epoch seconds."""
    try:
        tv = float(t)
    except ValueError:
        raise MetarecError(f"{path}: line {lineno}: timestamp {t[:40]!r} is not a number "
                           f"(expected epoch seconds)") from None
    if not math.isfinite(tv):
        raise MetarecError(f"{path}: line {lineno}: timestamp {t[:40]!r} is not a finite number")
    return tv

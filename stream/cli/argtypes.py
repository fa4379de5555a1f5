"""Argument types shared by the sub-commands (each raises ``argparse.ArgumentTypeError``: one-line errors, exit 2)."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone


def iso_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC.

    >>> iso_time("2024-05-01T12:00:00Z").timestamp(), iso_time("2024-05-01T12:00:00").timestamp()
    (1714564800.0, 1714564800.0)
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2024-05-01T12:00:00Z)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def positive_float(text: str) -> float:
    """A number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ≥ 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value

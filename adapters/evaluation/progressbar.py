"""A progress bar over events for the long evaluation loops: rich's, or a falsy no-op when disabled.

Example
-------
>>> bar = event_progress(False)
>>> with bar:
...     bool(bar)
False
"""
from __future__ import annotations

from typing import Any


class _NoBar:
    """Stand-in for a disabled bar: a context manager that is falsy, so callers can write ``if bar: ...``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def __bool__(self) -> bool:
        return False


def event_progress(enabled: bool) -> Any:
    """A ``rich.progress.Progress`` counting events (description, bar, n/total, elapsed, remaining), or a no-op."""
    if not enabled:
        return _NoBar()
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=False)

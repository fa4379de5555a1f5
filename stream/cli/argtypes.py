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


class RemovedFlag(argparse.Action):
    """A flag that no longer exists: giving it (or its ``METAREC_*`` variable) is a one-line error that names its
    replacement. Hidden from ``--help``.

    >>> p = argparse.ArgumentParser(prog="metarec train", exit_on_error=False)
    >>> removed_flags(p, {"--freshness": "use --popularity-weight"})
    >>> p.error = lambda message: print(message)
    >>> _ = p.parse_args(["--freshness", "1"])
    --freshness was removed: use --popularity-weight
    """

    def __init__(self, option_strings: list[str], dest: str, replacement: str = "", **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} was removed: {self.replacement}")


def removed_flags(parser: argparse.ArgumentParser, replacements: dict[str, str]) -> None:
    """Register each removed flag of ``replacements`` (flag → what to use instead)."""
    for flag, replacement in replacements.items():
        parser.add_argument(flag, action=RemovedFlag, replacement=replacement)

"""User-facing errors: bad input data, bad configuration, missing files.

The command line turns a :class:`MetarecError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class MetarecError(Exception):
    """An error the user can fix (bad argument, unreadable file, malformed data)."""

"""Reliability tests: crash, broker outage, hostile input, memory/TTL, security.

Each test prints its figures (events checked, messages fuzzed, recovery time, RSS, ...) with ``print`` (visible
with ``pytest -s``) and records them with :func:`figures`; they are repeated in a "metarec reliability figures"
section at the end of every pytest run that ran these tests (no ``-s`` needed).
"""
from __future__ import annotations

import pytest

_FIGURES: list[tuple[str, dict]] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest):
    """``figures(**values)``: print and record this test's measured figures."""
    def record(**values: object) -> None:
        _FIGURES.append((request.node.name, values))
        for key, value in values.items():
            request.node.user_properties.append((key, value))
        print(f"[figures] {request.node.name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)
    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest hook
    if not _FIGURES:
        return
    terminalreporter.section("metarec reliability figures")
    for name, values in _FIGURES:
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))

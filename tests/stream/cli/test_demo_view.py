"""The demo's printed lists: titles, and the optional ``because`` field when the worker sends it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from stream.cli.demo_score import WorkerLists
from stream.cli.demo_view import show_lists

TITLES = {"1": "Toy Story (1995)", "2": "GoldenEye (1995)", "3": "Four Rooms (1995)", "4": "Get Shorty (1995)"}


def _show(tmp_path: Path, value: dict) -> tuple[str, list[dict]]:
    from rich.console import Console

    (tmp_path / "vocab.json").write_text(json.dumps({"titles": TITLES}))
    ds = SimpleNamespace(item_features=None, user_ids=np.array(["u", "u"]), item_ids=np.array(["3", "4"]))
    lists = WorkerLists()
    lists.add({"user_id": "u", "scores": [2.0, 1.0], "model_version": "v1",
               "as_of": {"topic": "interactions", "partition": 0, "offset": 1}, **value})
    console = Console(record=True, width=120)
    shown = show_lists(console, lists, ds, tmp_path, 1)
    return console.export_text(), shown


def test_lists_show_the_because_items_when_the_worker_sends_them(tmp_path: Path) -> None:
    text, shown = _show(tmp_path, {"items": ["1", "2"], "because": ["3", None]})
    assert "because you watched" in text
    row = next(line for line in text.splitlines() if "Toy Story" in line)
    assert "Four Rooms (1995)" in row
    assert shown[0]["because"] == ["Four Rooms (1995)", None]


def test_lists_without_because_have_no_such_column(tmp_path: Path) -> None:
    text, shown = _show(tmp_path, {"items": ["1", "2"]})
    assert "because" not in text and "Toy Story (1995)" in text and "GoldenEye (1995)" in text
    assert shown[0]["because"] is None


@pytest.mark.parametrize("argv", [["--live-rate", "0"], ["--live-events", "0"]])
def test_bad_live_arguments_are_one_line_and_exit_2(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "stream", "demo", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "live" in proc.stderr

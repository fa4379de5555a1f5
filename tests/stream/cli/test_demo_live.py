"""``metarec demo`` end to end: the live phase compares the worker, θ0 alone and popularity on the same events."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in state  # a zombie has stopped


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
@pytest.mark.broker
def test_demo_live_phase_reports_three_hit_rates_and_metarec_beats_popularity(tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "stream", "demo", "--no-live", "--live-events", "4000",
                           "--live-rate", "400", "--report", str(report_dir)],
                          capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((report_dir / "demo.json").read_text())

    live = report["live"]
    rates = live["hit_rates"]
    assert live["events"] == 4000 and report["backfill"]["events"] == 100_000 - 4000
    assert live["unresolved_at_end"] == 0
    scored = rates["metarec"]["events"]
    assert scored > 1500  # positive events of known users among the last 4,000 of ML-100K
    for name in ("metarec", "no_adaptation", "popularity"):
        assert rates[name]["events"] == scored  # the same events for the three
        assert rates[name]["hit_rate"] == pytest.approx(rates[name]["hits"] / scored)
    assert rates["metarec"]["hit_rate"] > rates["popularity"]["hit_rate"], rates
    assert 0 < live["latency_p50_s"] <= live["latency_p99_s"] < 5.0, live
    assert report["backfill"]["events_per_s"] > 0
    md = (report_dir / "demo.md").read_text()
    for label, name in (("metarec (the worker)", "metarec"), ("θ0 alone (no_adaptation)", "no_adaptation"),
                        ("popularity", "popularity")):
        assert f"| live hit rate@10: {label} | {rates[name]['hit_rate']:.3f} |" in md
    assert "live hit rate@10: metarec" in proc.stdout  # the final table is printed too

    png = report_dir / "hit_rates.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    assert set(report["processes"]) == {"broker", "worker"}
    for name, pid in report["processes"].items():
        assert not _alive(pid), f"the demo's {name} (pid {pid}) is still running"
    assert _processes_mentioning(report["workdir"]) == []

"""The demo's live view: one refreshing table per phase (backfill, live), from the worker's /metrics and the
scoreboard of the three models (:mod:`stream.cli.demo_score`).

In the live phase the three hit rates are shown side by side with bars on one scale, and the event→list latency is
the worker's histogram *since the live phase began* (the backfill's queueing left out).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from adapters.errors import MetarecError
from stream.cli.demo_score import MODELS
from stream.cli.demo_view import histogram_quantile

LABELS = {"metarec": "metarec (the worker)", "no_adaptation": "θ0 alone (no steps)", "popularity": "popularity"}
LATENCY = "metarec_event_to_publish_seconds"


def bucket_delta(now: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A cumulative histogram minus an earlier snapshot of it (the observations in between).

    >>> bucket_delta([(0.1, 5.0), (math.inf, 9.0)], [(0.1, 2.0), (math.inf, 3.0)])
    [(0.1, 3.0), (inf, 6.0)]
    """
    base = dict(before)
    return [(le, count - base.get(le, 0.0)) for le, count in now]


@dataclass
class Phase:
    """What one phase watches: its name, the consumed-events target, and what else must hold to end it."""

    name: str
    start_events: int  #: events consumed when the phase began
    target: int  #: events consumed when it ends
    sent: Callable[[], int]  #: events sent so far in this phase
    base_buckets: list[tuple[float, float]] = field(default_factory=list)
    board: Any = None  #: live phase: the scoreboard
    #: called at every refresh; True once the phase may end (live: every scored event has the worker's outcome)
    settled: Callable[[], bool] = lambda: True


def _bar(rate: float, scale: float, width: int = 24) -> str:
    if math.isnan(rate):
        return ""
    filled = int(round(width * min(1.0, rate / scale))) if scale > 0 else 0
    return "█" * filled + "·" * (width - filled)


def table(phase: Phase, m: dict[str, Any], rate: float, elapsed: float) -> Any:
    from rich.table import Table

    consumed = m.get("metarec_events_consumed_total", 0.0) - phase.start_events
    t = Table(title=f"metarec demo — {phase.name} ({elapsed:.0f}s)", header_style="bold")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("", no_wrap=True)
    t.add_row("events sent / consumed", f"{phase.sent():,} / {consumed:,.0f}", f"of {phase.target - phase.start_events:,}")
    t.add_row("events/s consumed", f"{rate:,.0f}", "")
    t.add_row("lists published", f"{m.get('metarec_recommendations_published_total', 0.0):,.0f}", "")
    t.add_row("consumer lag (sum)", f"{m.get('metarec_consumer_lag', 0.0):,.0f}", "")
    lat = bucket_delta(m["_buckets"].get(LATENCY, []), phase.base_buckets)
    t.add_row("event→list p50 / p99",
              f"{histogram_quantile(lat, 0.5) * 1e3:,.0f} / {histogram_quantile(lat, 0.99) * 1e3:,.0f} ms",
              "this phase only" if phase.board is not None else "queueing behind the burst")
    if phase.board is not None:
        rates = phase.board.rates()
        scale = max([0.25] + [r["hit_rate"] for r in rates.values() if not math.isnan(r["hit_rate"])])
        n = rates["metarec"]["events"]
        t.add_section()
        t.add_row("[bold]hit rate@10[/bold]", "", f"same {n:,} live events")
        for name in MODELS:
            r = rates[name]["hit_rate"]
            style = "green" if name == "metarec" else "cyan" if name == "no_adaptation" else "yellow"
            t.add_row(LABELS[name], "—" if math.isnan(r) else f"{r:.3f}", f"[{style}]{_bar(r, scale)}[/{style}]")
    return t


def watch(console: Any, scraper: Any, worker: Any, phase: Phase, live: bool, timeout: float,
          errors: Callable[[], str | None]) -> dict[str, Any]:
    """Refresh the view until the worker has consumed ``phase.target`` events (and the phase is settled); the
    worker's metrics at the end, its throughput over the phase and the peak rate."""
    from rich.live import Live

    start = time.monotonic()
    t_first = t_last = None
    prev = (start, float(phase.start_events))
    peak = rate = 0.0
    settle_deadline = None
    m: dict[str, Any] = {"_buckets": {}}
    with Live(table(phase, m, 0.0, 0.0), console=console, refresh_per_second=4, transient=not live,
              auto_refresh=live) as view:
        while True:
            if worker.poll() is not None:
                raise MetarecError(f"the worker exited with code {worker.returncode} during the {phase.name}")
            problem = errors()
            if problem:
                raise MetarecError(problem)
            if time.monotonic() - start > timeout:
                raise MetarecError(f"the {phase.name} did not finish within {timeout:.0f} s")
            m = scraper.metrics()
            now = time.monotonic()
            consumed = m.get("metarec_events_consumed_total", 0.0)
            if consumed > phase.start_events and t_first is None:
                t_first = now
            if now > prev[0]:
                rate = (consumed - prev[1]) / (now - prev[0])
                peak = max(peak, rate)
            prev = (now, consumed)
            settled = phase.settled()  # (live) resolves the worker's outcomes received so far
            view.update(table(phase, m, rate, now - start))
            if consumed >= phase.target:
                t_last = t_last or now
                settle_deadline = settle_deadline or now + 15.0
                if settled or now > settle_deadline:
                    break
            time.sleep(0.25 if phase.board is not None else 0.5)
    if not live:
        console.print(table(phase, m, rate, time.monotonic() - start))
    seconds = max(1e-9, (t_last or time.monotonic()) - (t_first or start))
    return {"metrics": m, "seconds": round(seconds, 3),
            "events_per_s": round((phase.target - phase.start_events) / seconds, 1), "peak_events_per_s": round(peak, 1)}

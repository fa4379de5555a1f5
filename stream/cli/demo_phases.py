"""The demo's two phases on a running broker + worker: the backfill at full speed, then the live phase at a steady
rate with the three models scored on the same events (:mod:`stream.cli.demo_score`)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from adapters.errors import MetarecError


class Background:
    """A function in a daemon thread; its result or exception kept for the main thread."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: Exception | None = None

        def run() -> None:
            try:
                self.result = fn()
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                self.error = exc

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def join(self, what: str, timeout: float = 60.0) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise MetarecError(f"{what} did not finish within {timeout:.0f} s")
        if self.error is not None:
            raise MetarecError(f"{what} failed: {self.error}")
        return self.result


@dataclass
class DemoRun:
    """What both phases work with."""

    console: Any
    cfg: Any  #: the DemoConfig
    ds: Any
    bootstrap: str
    worker: Any  #: the worker's Popen
    scraper: Any
    reader: Any  #: stream.cli.demo_feed.ListReader
    board: Any  #: stream.cli.demo_score.Scoreboard
    learning: Background  #: θ0 learning the backfill
    stop: threading.Event
    n_backfill: int
    n_events: int

    def errors(self, *tasks: tuple[str, Background]) -> str | None:
        for what, task in (("θ0's backfill learning", self.learning), *tasks):
            if task.error is not None:
                return f"{what} failed: {task.error}"
        return f"reading the lists failed: {self.reader.error}" if self.reader.error is not None else None


def backfill(run: DemoRun) -> dict[str, Any]:
    """Phase 1: all but the live events at full speed; the worker's throughput, its metrics at the end."""
    from stream.cli.demo_live import LATENCY, Phase, watch
    from stream.cli.demo_view import histogram_quantile
    from stream.kafka.replay import replay_dataset

    cfg = run.cfg
    task = Background("replay", lambda: replay_dataset(run.ds, run.bootstrap, "interactions", limit=run.n_backfill,
                                                       partitions=cfg.partitions, stop=run.stop))
    phase = Phase("backfill, full speed", 0, run.n_backfill, lambda: task.result.sent if task.result else 0)
    seen = watch(run.console, run.scraper, run.worker, phase, cfg.live, cfg.timeout,
                 lambda: run.errors(("the backfill replay", task)))
    stats = task.join("the backfill replay")
    run.learning.join("θ0's backfill learning", timeout=120)
    buckets = seen["metrics"]["_buckets"].get(LATENCY, [])
    return {"metrics": seen["metrics"],
            "figures": {"events": run.n_backfill, "replay_seconds": round(stats.seconds, 3), "seconds": seen["seconds"],
                        "events_per_s": seen["events_per_s"], "peak_events_per_s": seen["peak_events_per_s"],
                        "latency_p99_s": round(histogram_quantile(buckets, 0.99), 4)}}


def live(run: DemoRun, before: dict[str, Any]) -> dict[str, Any]:
    """Phase 2: the last events at ``cfg.live_rate``; the three hit rates, the live latency, the PNG."""
    from stream.cli.demo_feed import feed_live, live_events
    from stream.cli.demo_live import LATENCY, Phase, bucket_delta, watch
    from stream.cli.demo_plot import plot_hit_rates
    from stream.cli.demo_score import MODELS
    from stream.cli.demo_view import histogram_quantile

    cfg, board, lists = run.cfg, run.board, run.reader.lists
    base = before["_buckets"].get(LATENCY, [])
    events = live_events(run.ds, run.n_backfill, run.n_events)
    sent = [0]
    task = Background("live-feed", lambda: feed_live(events, board, run.bootstrap, "interactions", cfg.live_rate,
                                                     run.stop, sent))
    phase = Phase(f"live, {cfg.live_rate:g} events/s",
                  int(before.get("metarec_events_consumed_total", run.n_backfill)), run.n_events, lambda: sent[0],
                  base, board, settled=lambda: board.resolve(lists) == 0 and task.result is not None)
    seen = watch(run.console, run.scraper, run.worker, phase, cfg.live, cfg.timeout,
                 lambda: run.errors(("the live feed", task)))
    seconds = task.join("the live feed")
    still_open = board.resolve(lists, final=True)
    lat = bucket_delta(seen["metrics"]["_buckets"].get(LATENCY, []), base)
    png = plot_hit_rates(board.outcomes(), Path(cfg.report_dir) / "hit_rates.png", cfg.live_rate)
    return {"metrics": seen["metrics"],
            "figures": {"events": cfg.live_events, "rate_offered": cfg.live_rate, "send_seconds": round(seconds, 3),
                        "events_per_s": round(cfg.live_events / seconds, 1),
                        "latency_p50_s": round(histogram_quantile(lat, 0.5), 4),
                        "latency_p99_s": round(histogram_quantile(lat, 0.99), 4),
                        "hit_rates": board.rates(MODELS + ("no_adaptation_own_pace",)),
                        "paired": {"metarec_vs_no_adaptation": board.paired("metarec", "no_adaptation"),
                                   "metarec_vs_popularity": board.paired("metarec", "popularity")},
                        "unresolved_at_end": still_open, "plot": str(png)}}


def worker_figures(m: dict[str, Any]) -> dict[str, Any]:
    """The worker's totals at the end, from its /metrics."""
    return {"events": int(m.get("metarec_events_consumed_total", 0)),
            "lists": int(m.get("metarec_recommendations_published_total", 0)),
            "unknown_items": int(m.get("metarec_unknown_items_total", 0)),
            "invalid": int(m.get("metarec_events_invalid_total", 0)), "model_version": m.get("model_version", "")}

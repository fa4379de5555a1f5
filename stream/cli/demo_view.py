"""What ``metarec demo`` shows and writes: the live view from the worker's /metrics, users' lists, the report."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from adapters.errors import MetarecError


def parse_exposition(text: str) -> dict[str, Any]:
    """Scalars by sample name (labelled samples summed) and histogram buckets (``name`` → [(le, count)])."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"_buckets": {}}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_bucket"):
                out["_buckets"].setdefault(s.name[:-7], []).append((float(s.labels["le"]), s.value))
            elif not s.name.endswith("_created"):
                if s.name == "metarec_model_info":
                    out["model_version"] = s.labels.get("version", "")
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Quantile ``q`` of a cumulative histogram (linear inside the bucket, like PromQL); NaN when empty."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            width = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / width if width else 0.0)
        prev_le, prev_count = le, count
    return prev_le


def _table(m: dict[str, Any], rates: tuple[float, float], n_events: int, elapsed: float) -> Any:
    from rich.table import Table

    t = Table(title=f"metarec worker — live ({elapsed:.0f}s)", show_header=True, header_style="bold")
    t.add_column("figure")
    t.add_column("value", justify="right")
    consumed = m.get("metarec_events_consumed_total", 0.0)
    lat = m["_buckets"].get("metarec_event_to_publish_seconds", [])
    t.add_row("events consumed", f"{consumed:,.0f} / {n_events:,}")
    t.add_row("events/s", f"{rates[0]:,.0f}")
    t.add_row("lists published", f"{m.get('metarec_recommendations_published_total', 0.0):,.0f}")
    t.add_row("lists/s", f"{rates[1]:,.0f}")
    t.add_row("consumer lag (sum)", f"{m.get('metarec_consumer_lag', 0.0):,.0f}")
    t.add_row("online hit rate (last 1,000)", f"{m.get('metarec_online_hit_rate', 0.0):.3f}")
    t.add_row("latency p50 / p99", f"{histogram_quantile(lat, 0.5) * 1e3:,.0f} / "
                                   f"{histogram_quantile(lat, 0.99) * 1e3:,.0f} ms")
    t.add_row("users active", f"{m.get('metarec_users_active', 0.0):,.0f}")
    t.add_row("model", str(m.get("model_version", "")))
    return t


def live_watch(console: Any, scraper: Any, worker: Any, n_events: int, replay: dict[str, Any], live: bool,
               timeout: float) -> dict[str, Any]:
    """Refresh the live view until the worker has consumed ``n_events``; the run's figures."""
    from rich.live import Live

    start = time.monotonic()
    t_first = t_last = None
    prev = (start, 0.0, 0.0)
    peak = 0.0
    m: dict[str, Any] = {"_buckets": {}}
    rates = (0.0, 0.0)
    with Live(_table(m, rates, n_events, 0.0), console=console, refresh_per_second=4, transient=not live,
              auto_refresh=live) as view:
        while True:
            if worker.poll() is not None:
                raise MetarecError(f"the worker exited with code {worker.returncode} during the replay")
            if "error" in replay:
                raise MetarecError(f"replay failed: {replay['error']}")
            if time.monotonic() - start > timeout:
                raise MetarecError(f"the worker did not consume {n_events} events within {timeout:.0f} s")
            m = scraper.metrics()
            now = time.monotonic()
            consumed = m.get("metarec_events_consumed_total", 0.0)
            published = m.get("metarec_recommendations_published_total", 0.0)
            if consumed > 0 and t_first is None:
                t_first = now
            dt = now - prev[0]
            if dt > 0:
                rates = ((consumed - prev[1]) / dt, (published - prev[2]) / dt)
                peak = max(peak, rates[0])
            prev = (now, consumed, published)
            view.update(_table(m, rates, n_events, now - start))
            if consumed >= n_events:
                t_last = now
                break
            time.sleep(0.5)
    if not live:
        console.print(_table(m, rates, n_events, time.monotonic() - start))
    seconds = max(1e-9, (t_last or time.monotonic()) - (t_first or start))
    lat = m["_buckets"].get("metarec_event_to_publish_seconds", [])
    ada = m["_buckets"].get("metarec_adaptation_seconds", [])
    return {"events": int(m.get("metarec_events_consumed_total", 0)),
            "lists": int(m.get("metarec_recommendations_published_total", 0)),
            "seconds": round(seconds, 3), "events_per_s": round(n_events / seconds, 1),
            "peak_events_per_s": round(peak, 1),
            "lists_per_s": round(m.get("metarec_recommendations_published_total", 0) / seconds, 1),
            "batches": int(m.get("metarec_batches_total", 0)),
            "latency_p50_s": round(histogram_quantile(lat, 0.5), 4),
            "latency_p99_s": round(histogram_quantile(lat, 0.99), 4),
            "adaptation_p50_s": round(histogram_quantile(ada, 0.5), 5),
            "online_hit_rate": round(m.get("metarec_online_hit_rate", 0.0), 4),
            "unknown_items": int(m.get("metarec_unknown_items_total", 0)),
            "invalid": int(m.get("metarec_events_invalid_total", 0)),
            "model_version": m.get("model_version", "")}


def show_lists(console: Any, bootstrap: str, ds: Any, ckpt_dir: Path, n_users: int,
               n_events: int | None = None) -> list[dict[str, Any]]:
    """Print the latest list of the ``n_users`` most active users, with titles; return them."""
    from confluent_kafka import Consumer
    from rich.table import Table

    from stream.kafka.client import consumer_config

    vocab = json.loads((ckpt_dir / "vocab.json").read_text())
    titles: dict[str, str] = {}
    feats = getattr(ds, "item_features", None)
    if feats is not None:  # every title of the dataset (the checkpoint knows only the items of its history)
        titles.update(zip(map(str, feats.item_ids), feats.titles))
    titles.update(vocab.get("titles") or {})
    latest: dict[str, dict] = {}
    counts: dict[str, int] = {}
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    c = Consumer(consumer_config(bootstrap))
    parts = c.list_topics("recommendations", timeout=10).topics["recommendations"].partitions
    c.assign([TopicPartition("recommendations", p, OFFSET_BEGINNING) for p in parts])  # no group join: fast
    idle = time.monotonic()
    try:
        while time.monotonic() - idle < 2.0:
            batch = c.consume(10_000, timeout=0.5)
            for msg in batch:
                if msg.error():
                    continue
                v = json.loads(msg.value())
                latest[v["user_id"]] = v
                counts[v["user_id"]] = counts.get(v["user_id"], 0) + 1
            if batch:
                idle = time.monotonic()
    finally:
        c.close()
    chosen = sorted(counts, key=lambda u: (-counts[u], u))[:n_users]
    shown = []
    users = ds.user_ids[:n_events] if n_events is not None else ds.user_ids
    for u in chosen:
        v = latest[u]
        recent = [str(ds.item_ids[i]) for i in (users == u).nonzero()[0][-3:]]
        t = Table(title=f"user {u} — {counts[u]} lists; list as of offset {v['as_of']['offset']} "
                        f"(partition {v['as_of']['partition']}), model {v['model_version']}", header_style="bold")
        t.add_column("#", justify="right")
        t.add_column("recommended")
        t.add_column("score", justify="right")
        for n, (item, score) in enumerate(zip(v["items"], v["scores"]), 1):
            t.add_row(str(n), titles.get(item, item), f"{score:.3f}")
        console.print(t)
        console.print("  recently watched: " + "; ".join(titles.get(i, i) for i in recent))
        shown.append({"user_id": u, "lists": counts[u], "items": v["items"],
                      "titles": [titles.get(i, i) for i in v["items"]], "scores": v["scores"],
                      "recent": [titles.get(i, i) for i in recent], "as_of": v["as_of"],
                      "model_version": v["model_version"]})
    return shown


def final_report(console: Any, cfg: Any, ds: Any, ckpt_dir: Path, cached: bool, train_s: float,
                 run: dict[str, Any], stats: Any, lists: list[dict[str, Any]], exit_code: int | None,
                 total_s: float) -> Path:
    """Print the final figures and write ``demo.json`` + ``demo.md`` under ``cfg.report_dir``."""
    from rich.table import Table

    t = Table(title="final figures", header_style="bold")
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows = [("events replayed", f"{stats.sent if stats else 0:,}"), ("events consumed", f"{run['events']:,}"),
            ("lists published", f"{run['lists']:,}"), ("throughput", f"{run['events_per_s']:,.0f} events/s"),
            ("lists/s", f"{run['lists_per_s']:,.0f}"),
            ("latency p50 / p99", f"{run['latency_p50_s'] * 1e3:,.0f} / {run['latency_p99_s'] * 1e3:,.0f} ms"),
            ("adaptation call p50", f"{run['adaptation_p50_s'] * 1e3:,.2f} ms"),
            ("online hit rate (last 1,000 positive events)", f"{run['online_hit_rate']:.3f}"),
            ("unknown items", f"{run['unknown_items']:,}"), ("worker exit code (SIGTERM)", str(exit_code)),
            ("total demo time", f"{total_s:.0f} s")]
    for a, b in rows:
        t.add_row(a, b)
    console.print(t)
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"dataset": ds.name, "fingerprint": ds.fingerprint, "checkpoint": str(ckpt_dir),
              "checkpoint_cached": cached, "train_seconds": round(train_s, 1),
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
              "replay": {"sent": stats.sent if stats else 0, "seconds": round(stats.seconds, 3) if stats else None},
              "worker": run, "worker_exit_code": exit_code, "users": lists, "total_seconds": round(total_s, 1),
              "notes": {"latency": "metarec_event_to_publish_seconds of the worker: from the Kafka record "
                                   "timestamp when it is within an hour of the wall clock (else from the worker's "
                                   "fetch) to the delivery of the user's list; the whole dataset is replayed as "
                                   "one burst, so it is mostly time spent queued behind earlier events",
                        "throughput": "events consumed / seconds from the first to the last consumed event"}}
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    md = ["# metarec demo", "", f"Dataset {ds.name} ({run['events']:,} events), model {run['model_version']}.", "",
          "| figure | value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows], "", "## Lists", ""]
    for u in lists:
        md.append(f"**user {u['user_id']}** (recently: {'; '.join(u['recent'])}):")
        md.extend(f"{n}. {title}" for n, title in enumerate(u["titles"], 1))
        md.append("")
    md.append("Command: `metarec demo` (same as `make demo`).")
    (out / "demo.md").write_text("\n".join(md) + "\n")
    return out

"""What ``metarec demo`` shows and writes: /metrics parsing, users' lists (with ``because`` when the worker sends it),
the final figures and the report (``demo.json``, ``demo.md``)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any


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


def _titles(ds: Any, ckpt_dir: Path) -> dict[str, str]:
    vocab = json.loads((ckpt_dir / "vocab.json").read_text())
    titles: dict[str, str] = {}
    feats = getattr(ds, "item_features", None)
    if feats is not None:  # every title of the dataset (the checkpoint knows only the items of its history)
        titles.update(zip(map(str, feats.item_ids), feats.titles))
    titles.update(vocab.get("titles") or {})
    return titles


def show_lists(console: Any, lists: Any, ds: Any, ckpt_dir: Path, n_users: int,
               n_events: int | None = None) -> list[dict[str, Any]]:
    """Print the latest list of the ``n_users`` users with the most lists (``lists``: a
    :class:`~stream.cli.demo_score.WorkerLists`), with titles and, when the list carries the optional ``because``
    field, the user's own event behind each item; return them."""
    from rich.table import Table

    titles = _titles(ds, ckpt_dir)
    counts = dict(lists.counts)
    chosen = sorted(counts, key=lambda u: (-counts[u], u))[:n_users]
    shown = []
    users = ds.user_ids[:n_events] if n_events is not None else ds.user_ids
    for u in chosen:
        v = lists.latest[u]
        because = v.get("because")
        if not isinstance(because, list) or len(because) != len(v["items"]):
            because = None  # optional in the contract: absent (or malformed) → not shown
        recent = [str(ds.item_ids[i]) for i in (users == u).nonzero()[0][-3:]]
        t = Table(title=f"user {u} — {counts[u]} lists; list as of offset {v['as_of']['offset']} "
                        f"(partition {v['as_of']['partition']}), model {v['model_version']}", header_style="bold")
        t.add_column("#", justify="right")
        t.add_column("recommended")
        t.add_column("score", justify="right")
        if because is not None:
            t.add_column("because you watched")
        for n, (item, score) in enumerate(zip(v["items"], v["scores"]), 1):
            row = [str(n), titles.get(item, item), f"{score:.3f}"]
            if because is not None:
                row.append("" if because[n - 1] is None else titles.get(str(because[n - 1]), str(because[n - 1])))
            t.add_row(*row)
        console.print(t)
        console.print("  recently watched: " + "; ".join(titles.get(i, i) for i in recent))
        shown.append({"user_id": u, "lists": counts[u], "items": v["items"],
                      "titles": [titles.get(i, i) for i in v["items"]], "scores": v["scores"],
                      "because": None if because is None else
                      [None if b is None else titles.get(str(b), str(b)) for b in because],
                      "recent": [titles.get(i, i) for i in recent], "as_of": v["as_of"],
                      "model_version": v["model_version"]})
    return shown


def _rows(figures: dict[str, Any], exit_code: int | None, total_s: float) -> list[tuple[str, str]]:
    b, live, w = figures["backfill"], figures["live"], figures["worker"]
    hr = live["hit_rates"]
    n = hr["metarec"]["events"]
    return [
        ("backfill: events at full speed", f"{b['events']:,}"),
        ("backfill: throughput (worker)", f"{b['events_per_s']:,.0f} events/s"),
        ("backfill: event→list p99 (queueing)", f"{b['latency_p99_s'] * 1e3:,.0f} ms"
                                                + (" or more" if b["latency_p99_s"] >= 30 else "")),
        ("live: events, rate sent", f"{live['events']:,} at {live['events_per_s']:,.0f}/s"),
        ("live: event→list p50 / p99", f"{live['latency_p50_s'] * 1e3:,.0f} / {live['latency_p99_s'] * 1e3:,.0f} ms"),
        ("live: scored events (the same for all)", f"{n:,}"),
        ("live hit rate@10: metarec (the worker)", f"{hr['metarec']['hit_rate']:.3f}"),
        ("live hit rate@10: θ0 alone (no_adaptation)", f"{hr['no_adaptation']['hit_rate']:.3f}"),
        ("live hit rate@10: popularity", f"{hr['popularity']['hit_rate']:.3f}"),
        ("  θ0 alone, own fresher lists (see notes)", f"{hr['no_adaptation_own_pace']['hit_rate']:.3f}"),
        ("lists published", f"{w['lists']:,}"), ("unknown items", f"{w['unknown_items']:,}"),
        ("worker exit code (SIGTERM)", str(exit_code)), ("total demo time", f"{total_s:.0f} s")]


def final_report(console: Any, cfg: Any, ds: Any, ckpt_dir: Path, cached: bool, train_s: float,
                 figures: dict[str, Any], lists: list[dict[str, Any]], exit_code: int | None,
                 total_s: float) -> Path:
    """Print the final figures and write ``demo.json`` + ``demo.md`` under ``cfg.report_dir``."""
    from rich.table import Table

    rows = _rows(figures, exit_code, total_s)
    t = Table(title="final figures", header_style="bold")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for a, b in rows:
        t.add_row(a, b)
    console.print(t)
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"dataset": ds.name, "fingerprint": ds.fingerprint, "checkpoint": str(ckpt_dir),
              "checkpoint_cached": cached, "train_seconds": round(train_s, 1),
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
              **figures, "worker_exit_code": exit_code, "users": lists, "total_seconds": round(total_s, 1),
              "notes": {
                  "hit_rates": "live phase only, the same scored events for the three models: positive events "
                               "(rating >= 4) of users with an earlier event; a hit when the event's item is in the "
                               "list the model showed that user before the event (metarec: the newest list on the "
                               "recommendations topic whose as_of offset is below the event's; no_adaptation: its list as "
                               "of that same event, i.e. with the worker's information; no list = miss)",
                  "no_adaptation_own_pace": "θ0 alone scored with its own lists, made after every ~2 live events "
                                            "(the demo's send ticks) instead of as of the event the worker's list "
                                            "was as of: what the worker's micro-batches and latency cost, since a "
                                            "user's next event in the live phase is mostly the very next event",
                  "latency": "metarec_event_to_publish_seconds of the worker, observations of the live phase only "
                             "(histogram at its end minus the one at its start): from the send of the event to the "
                             "delivery of the user's list",
                  "throughput": "backfill events / seconds from the first to the last consumed backfill event"}}
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    md = ["# metarec demo", "", f"Dataset {ds.name}, model {figures['worker']['model_version']}.", "",
          "| figure | value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows], "",
          "![rolling hit rates](hit_rates.png)", "", "## Lists", ""]
    for u in lists:
        md.append(f"**user {u['user_id']}** (recently: {'; '.join(u['recent'])}):")
        because = u["because"] or [None] * len(u["titles"])
        md.extend(f"{n}. {title}" + (f" (because: {b})" if b else "") for n, (title, b) in
                  enumerate(zip(u["titles"], because), 1))
        md.append("")
    md.append("Command: `metarec demo` (same as `make demo`).")
    (out / "demo.md").write_text("\n".join(md) + "\n")
    return out

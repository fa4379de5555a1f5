"""The benchmark's targets and its end-of-run table.

:func:`check_targets` compares a result (the contract JSON) with the targets of the performance issue;
:func:`render_table` prints the figures and the targets with ``rich``.

Example
-------
>>> t = check_targets({"end_to_end": {"events_per_s": 8.0, "latency_p99_s": 0.04},
...                    "runtimes": {"kafka": {"events_per_s": 8.0}, "faust": {"events_per_s": 2.0}},
...                    "references": {"batched_learner_events_per_s": 10.0, "river_full_ranking_events_per_s": 1.0},
...                    "adaptation": {"mf": {"users_per_s": 1.0}, "melu": {"users_per_s": 1.0}},
...                    "scale_out": {"one_process_events_per_s": 1.0, "two_processes_events_per_s": 2.0},
...                    "restore": {"records_per_s": 50_000.0}, "state_bytes_per_user": 100.0})
>>> [x["met"] for x in t]
[True, True, True, True, True, False, False, False, True, False, False, False]
"""
from __future__ import annotations

import math
from typing import Any


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else float("nan")


def check_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: name, measured value, threshold, whether it was met."""
    e2e, ref, ad, so = r["end_to_end"], r["references"], r["adaptation"], r["scale_out"]
    rt, items = r.get("runtimes", {}), r.get("item_state", {})
    kafka, faust = rt.get("kafka", {}), rt.get("faust", {})
    rows = [
        ("runtime kafka / runtime faust, end to end",
         _ratio(kafka.get("events_per_s", math.nan), faust.get("events_per_s", math.nan)), ">=", 3.0),
        ("end to end / learner alone (batched)",
         _ratio(e2e["events_per_s"], ref.get("batched_learner_events_per_s", math.nan)), ">=", 0.5),
        ("p99 event→publish at half max rate, s", e2e["latency_p99_s"], "<=", 0.050),
        ("two processes / one process", _ratio(so["two_processes_events_per_s"], so["one_process_events_per_s"]),
         ">=", 1.7),
        ("restore of a partition's state, records/s", r.get("restore", {}).get("records_per_s", math.nan), ">=",
         40_000.0),
        ("mf adaptation, users/s", ad["mf"]["users_per_s"], ">=", 30_000.0),
        ("melu adaptation, users/s", ad["melu"]["users_per_s"], ">=", 2_000.0),
        ("end-to-end / River full ranking", _ratio(e2e["events_per_s"], ref["river_full_ranking_events_per_s"]),
         ">=", 10.0),
        ("durable state per user, bytes", r["state_bytes_per_user"], "<=", 2048.0),
        ("two workers: shared item state / without", _ratio(items.get("two_workers_shared_events_per_s", math.nan),
                                                          items.get("two_workers_events_per_s", math.nan)), ">=", 0.9),
        ("p99 latency: shared item state / without", _ratio(items.get("latency_p99_shared_s", math.nan),
                                                          items.get("latency_p99_s", math.nan)), "<=", 1.2),
        ("peak RSS: shared item state − without, MiB",
         (items.get("peak_rss_shared_bytes", math.nan) - items.get("peak_rss_bytes", math.nan)) / 2**20, "<=", 50.0),
    ]
    out = []
    for name, value, op, threshold in rows:
        ok = math.isfinite(value) and (value >= threshold if op == ">=" else value <= threshold)
        out.append({"target": name, "value": value, "op": op, "threshold": threshold, "met": bool(ok)})
    return out


def _fmt(v: Any, unit: str = "") -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    else:
        text = f"{v:,}" if isinstance(v, int) else str(v)
    return f"{text}{unit}"


def render_table(r: dict[str, Any], console: Any = None) -> None:
    """Print the figures and the targets (``rich`` tables)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    e2e, ref, ad, so = r["end_to_end"], r["references"], r["adaptation"], r["scale_out"]
    t = Table(title=f"metarec bench — {r.get('config', {}).get('dataset', '?')}, "
                    f"{e2e['events']:,} events, {r.get('config', {}).get('partitions', '?')} partitions")
    t.add_column("measurement")
    t.add_column("value", justify="right")
    rt = r.get("runtimes", {})
    rows = [
        (f"end-to-end (1 worker), runtime {e2e.get('runtime', '?')}, events/s", _fmt(e2e["events_per_s"])),
        *((f"runtime {name}: events/s, p50 / p99 at half its max rate",
           f"{_fmt(x['events_per_s'])}, {_fmt(x['latency_p50_s'] * 1000, ' ms')} / "
           f"{_fmt(x['latency_p99_s'] * 1000, ' ms')}") for name, x in rt.items()),
        ("restore of the state into a fresh worker, records/s", _fmt(r.get("restore", {}).get("records_per_s", math.nan))),
        ("event→list p50 / p99 at half max rate",
         f"{_fmt(e2e['latency_p50_s'] * 1000, ' ms')} / {_fmt(e2e['latency_p99_s'] * 1000, ' ms')}"),
        ("scale-out: 1 / 2 workers, events/s",
         f"{_fmt(so['one_process_events_per_s'])} / {_fmt(so['two_processes_events_per_s'])}"),
        ("adaptation seq / mf / melu, users/s",
         " / ".join(_fmt(ad[m]["users_per_s"]) if m in ad else "–" for m in ("seq", "mf", "melu"))),
        ("adaptation seq, bayes task learner, users/s", _fmt(ad["seq_bayes"]["users_per_s"]) if "seq_bayes" in ad
         else "–"),
        ("pass-through faust / kafka, events/s", f"{_fmt(ref['faust_passthrough_events_per_s'])} / "
                                                  f"{_fmt(ref.get('kafka_passthrough_events_per_s', math.nan))}"),
        ("River full ranking, lists/s", _fmt(ref["river_full_ranking_events_per_s"])),
        ("naive loop (1 event per call), events/s", _fmt(ref["naive_loop_events_per_s"])),
        ("peak RSS of a worker", _fmt(r["peak_rss_bytes"] / 2**20, " MiB")),
        ("durable state per user", _fmt(r["state_bytes_per_user"], " B")),
    ]
    if "batched_learner_events_per_s" in ref:
        rows.insert(7, ("learner alone, 500-event batches, events/s", _fmt(ref["batched_learner_events_per_s"])))
    items = r.get("item_state")
    if items:
        rows.insert(1, ("two workers without / with --item-state shared, events/s",
                        f"{_fmt(items['two_workers_events_per_s'])} / {_fmt(items['two_workers_shared_events_per_s'])}"))
        rows.insert(2, ("p99 at half max rate without / with --item-state shared",
                        f"{_fmt(items['latency_p99_s'] * 1000, ' ms')} / "
                        f"{_fmt(items['latency_p99_shared_s'] * 1000, ' ms')}"))
        per = items["us_per_event"]
        rows.append(("shared item state per event: owner / apply / encode",
                     f"{_fmt(per['owner'], ' µs')} / {_fmt(per['apply'], ' µs')} / {_fmt(per['encode'], ' µs')}"))
        rows.append(("shared item state, bytes per event (both topics)", _fmt(items["bytes_per_event"], " B")))
    for name, value in rows:
        t.add_row(name, value)
    console.print(t)
    tt = Table(title="targets")
    tt.add_column("target")
    tt.add_column("measured", justify="right")
    tt.add_column("needed", justify="right")
    tt.add_column("met")
    for x in r.get("targets") or check_targets(r):
        tt.add_row(x["target"], _fmt(float(x["value"])), f"{x['op']} {_fmt(float(x['threshold']))}",
                   "[green]yes[/green]" if x["met"] else "[red]no[/red]")
    console.print(tt)
    load = r.get("machine", {}).get("load_before")
    if load:
        console.print(f"load average before the run: {', '.join(f'{x:.2f}' for x in load)} "
                      f"on {r['machine'].get('cpus', '?')} CPUs")

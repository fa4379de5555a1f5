"""A self-contained HTML report of a prequential run: curves along the stream, final figures, configuration.

Files written into the report directory (relative links only, so the directory can be moved or zipped):

* ``index.html`` -- final figures table, per-group tables, the exact command line, the run's configuration, the plots;
* ``hr_rolling.png`` -- rolling HR@10 of every model along the stream;
* ``rmse_rolling.png`` -- rolling RMSE of every model that predicts ratings;
* ``adaptation_gain.png`` -- rolling HR@10 of ``metarec`` minus ``no_adaptation`` (above 0: adaptation helps);
* ``drift_recovery.png`` -- with a drift ground truth: hit rate of drifting users by events since their drift.

Example
-------
>>> import tempfile
>>> from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
>>> from adapters.evaluation.baselines import Popularity
>>> s = EventStream.from_arrays(users=list("abcdabcd"), items=list("xyxyzxyz"), ratings=[5] * 8)
>>> res = run_protocol(s, [Popularity(s)], PrequentialConfig(), progress=False)
>>> d = tempfile.mkdtemp()
>>> sorted(p.name for p in write_report(d, res, res.summary(), {"dataset": "toy"}, "metarec evaluate ..."))
['hr_rolling.png', 'index.html', 'rmse_rolling.png']
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from adapters.errors import MetarecError
from adapters.evaluation.groups import GROUPS_NOTE
from adapters.evaluation.metrics import rolling_mean
from adapters.evaluation.prequential import PrequentialResult

log = logging.getLogger(__name__)

NOTES = {
    "popularity": "all-time item counts; rmse/mae = item mean rating so far (global mean for an unrated item)",
    "popularity_decayed": "counts halved every 5,000 events; rmse/mae = decayed item mean rating",
    "river_biasedmf": "River BiasedMF, 10 factors, reference-tool hyper-parameters, learned event by event",
    "metarec": "meta-learned θ0 + per-user online adaptation (OnlineLearner, the worker's code)",
    "no_adaptation": "same checkpoint and OnlineLearner with steps=0: θ0 user part, never adapted",
    "erm_finetune": "θ0 trained by plain ERM (no meta-learning), same online adaptation",
    "cooccurrence": "item-item co-occurrence over the user's last 10 items (decay 0.8, damping 0.5), learned "
                    "event by event; the reference tool's model, no rating model",
}
LIST_METRICS_NOTE = (
    "Beyond accuracy, over the top-10 list each ranking model shows for each scored positive event (its 10 best "
    "candidates): new_item_hr@10 = HR@10 on positives whose item first appeared after the history; coverage@10 = "
    "share of the catalog listed at least once; novelty@10 = mean −log2 of a listed item's share of the events "
    "before the list's event; diversity@10 = mean pairwise 1 − cosine of the listed items' genres (datasets with "
    "genres only).")
ORDER = ["rmse", "mae", "hr@10", "ndcg@10", "new_item_hr@10", "coverage@10", "novelty@10", "diversity@10"]


def _window(n: int) -> int:
    return int(min(5_000, max(50, n // 40)))


def _full(x: np.ndarray, y: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop the warm-up points whose trailing window is not full yet (noisy spikes at the start)."""
    return (x[w - 1:], y[w - 1:]) if len(x) > w else (x, y)


def _pyplot():  # noqa: ANN202
    try:
        import matplotlib
    except ImportError as exc:
        raise MetarecError("--report needs matplotlib: pip install 'metarec[report]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _hr_plot(result: PrequentialResult, out: Path) -> Path | None:
    pos = result.positive_positions
    if not len(pos):
        return None
    plt = _pyplot()
    w = _window(len(pos))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, tr in result.traces.items():
        ranks = tr.rank_array()
        if len(ranks) != len(pos):
            continue
        ax.plot(*_full(pos, rolling_mean((ranks < result.config.k).astype(np.float64), w), w), label=name, lw=1.3)
    ax.set_xlabel("event position in the stream")
    ax.set_ylabel(f"HR@{result.config.k} (rolling, last {w:,} positive events)")
    ax.set_title(f"Rolling HR@{result.config.k} along the stream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "hr_rolling.png")


def _rmse_plot(result: PrequentialResult) -> tuple[Any, int] | None:
    s = result.stream
    y = s.ratings[s.start:].astype(np.float64)
    pos = result.scored_positions
    plt = _pyplot()
    w = _window(len(pos))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    drawn = 0
    for name, tr in result.traces.items():
        pred = tr.prediction_array()
        ok = ~np.isnan(pred) & ~np.isnan(y)
        if not ok.any():
            continue
        ax.plot(*_full(pos[ok], np.sqrt(rolling_mean((pred[ok] - y[ok]) ** 2, w)), w), label=name, lw=1.3)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("event position in the stream")
    ax.set_ylabel(f"RMSE (rolling, last {w:,} rated events)")
    ax.set_title("Rolling RMSE along the stream (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig, drawn


def _gain_plot(result: PrequentialResult, out: Path) -> Path | None:
    if "metarec" not in result.traces or "no_adaptation" not in result.traces:
        return None
    pos = result.positive_positions
    a, b = result.traces["metarec"].rank_array(), result.traces["no_adaptation"].rank_array()
    if not len(pos) or len(a) != len(pos) or len(b) != len(pos):
        return None
    plt = _pyplot()
    w = _window(len(pos))
    k = result.config.k
    pos, gain = _full(pos, rolling_mean((a < k).astype(np.float64) - (b < k).astype(np.float64), w), w)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.axhline(0.0, color="black", lw=0.8)
    ax.fill_between(pos, gain, 0, where=gain >= 0, color="tab:green", alpha=0.4, label="adaptation helps")
    ax.fill_between(pos, gain, 0, where=gain < 0, color="tab:red", alpha=0.4, label="adaptation hurts")
    ax.set_xlabel("event position in the stream")
    ax.set_ylabel(f"Δ HR@{k} (rolling {w:,})")
    ax.set_title("metarec minus no_adaptation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "adaptation_gain.png")


def _drift_plot(drift: dict[str, Any], out: Path) -> Path:
    plt = _pyplot()
    offsets = np.asarray(drift["curve_offsets"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, m in drift["models"].items():
        curve = np.array([np.nan if c is None else c for c in m["curve"]], dtype=np.float64)
        rec = m.get("curve_recovery_events")
        label = f"{name} (pooled recovery {rec} events)" if rec is not None else f"{name} (pooled: not recovered)"
        ax.plot(offsets, curve, label=label, lw=1.3)
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_xlabel("user's own events since their drift")
    ax.set_ylabel("HR@10 of drifting users' positive events")
    ax.set_title(f"Recovery after planted drift ({drift['drifting_users']:,} drifting users)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "drift_recovery.png")


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _groups_html(groups: dict[str, dict[str, dict[str, float]]] | None) -> str:
    """One table per metric (hr@k, ndcg@k): one row per group, one column per ranking model."""
    if not groups:
        return ""
    models = list(dict.fromkeys(n for per_model in groups.values() for n in per_model))
    metrics = list(dict.fromkeys(m for per_model in groups.values() for fig in per_model.values() for m in fig
                                 if m != "positive_events"))
    parts = [f"<h2>Groups</h2><p>{html.escape(GROUPS_NOTE)}</p>"]
    for metric in metrics:
        rows = "".join(
            f"<tr><td><b>{html.escape(g)}</b></td>"
            f"<td>{next(iter(per_model.values())).get('positive_events', 0):,}</td>"
            + "".join(f"<td>{_fmt(per_model.get(n, {}).get(metric))}</td>" for n in models) + "</tr>"
            for g, per_model in groups.items())
        parts.append(f"<h3>{metric} by group</h3><table><tr><th>group</th><th>positive events</th>"
                     + "".join(f"<th>{html.escape(n)}</th>" for n in models) + f"</tr>{rows}</table>")
    return "".join(parts)


def write_report(directory: str | Path, result: PrequentialResult, summary: dict[str, dict[str, float]],
                 config: dict[str, Any], command: str, drift: dict[str, Any] | None = None,
                 groups: dict[str, dict[str, dict[str, float]]] | None = None) -> list[Path]:
    """Write ``index.html`` and the PNG plots into ``directory``; return the files written.

    ``groups``: the run's per-group figures (:func:`adapters.evaluation.groups.group_breakdown`), shown as tables.
    """
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetarecError(f"cannot create report directory {out}: {exc.strerror or exc}") from None
    files: list[Path] = []
    images: list[tuple[str, str]] = []
    hr = _hr_plot(result, out)
    if hr:
        files.append(hr)
        images.append((hr.name, "Ranking quality along the stream: higher is better. Each point is the share of "
                                "the last positive events whose item was in the model's top 10."))
    gain = _gain_plot(result, out)
    if gain:
        files.append(gain)
        images.append((gain.name, "Where the green area is above zero, per-user online adaptation beats the same "
                                  "model without adaptation."))
    rm = _rmse_plot(result)
    if rm:
        files.append(_save(rm[0], out / "rmse_rolling.png"))
        images.append(("rmse_rolling.png", "Rating error along the stream: lower is better."))
    if drift:
        files.append(_drift_plot(drift, out))
        images.append(("drift_recovery.png", "Hit rate of the drifting users aligned at their own drift event: "
                                             "the faster a curve climbs back after 0, the faster the model follows."))
    present = {m for fig in summary.values() for m in fig}
    metrics = [m for m in ORDER if m in present] + sorted(present - set(ORDER))
    rows = "".join(
        f"<tr><td><b>{html.escape(n)}</b></td>" + "".join(f"<td>{_fmt(fig.get(m))}</td>" for m in metrics)
        + f"<td>{result.traces[n].seconds:.1f}</td><td class=note>{html.escape(NOTES.get(n, ''))}</td></tr>"
        if n in result.traces else "" for n, fig in summary.items())
    drift_html = ""
    if drift:
        keys = ["curve_recovery_events", "measured_users", "recovered_share", "median_events", "mean_events",
                "hr@10_before", "hr@10_first10_after"]
        drows = "".join(f"<tr><td><b>{html.escape(n)}</b></td>" + "".join(f"<td>{_fmt(m.get(k))}</td>" for k in keys)
                        + "</tr>" for n, m in drift["models"].items())
        drift_html = (f"<h2>Drift recovery</h2><p>{drift['drifting_users']:,} drifting users. Recovery = the user's "
                      "own events from the drift until a run of post-drift positives is back at "
                      f"{drift['config']['threshold']:.0%} of the pre-drift hit rate: per user (median/mean over the "
                      "measurable users, share recovered) and on the pooled curve of all drifting users "
                      "(curve_recovery_events). A model that never had a personal level (popularity) has nothing "
                      "to recover: read recovery together with the hit rates before/after.</p>"
                      "<table><tr><th>model</th>"
                      + "".join(f"<th>{k}</th>" for k in keys) + f"</tr>{drows}</table>")
    s = result.stream
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>metarec prequential · {html.escape(s.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child,td.note{{text-align:left}}td.note{{font-size:85%;color:#555}}
pre{{background:#f6f6f6;padding:8px;overflow-x:auto}}img{{max-width:100%}}</style></head><body>
<h1>Prequential evaluation · {html.escape(s.name)}</h1>
<p>{len(s):,} events, {s.n_users:,} users, {s.n_cols:,} items. History: the first {s.start:,} events (learned by
every model, not scored); scored: {len(s) - s.start:,} events, {len(result.positive_positions):,} of them positive
(ranked). Each event is scored before it is learned from; candidates = items seen before minus the user's own.</p>
<h2>Final figures</h2><table><tr><th>model</th>{''.join(f'<th>{m}</th>' for m in metrics)}<th>seconds</th>
<th>what it is</th></tr>{rows}</table>
{f"<p>{html.escape(LIST_METRICS_NOTE)}</p>" if any(m.startswith("coverage@") for m in metrics) else ""}
{''.join(f'<h2>{html.escape(Path(n).stem.replace("_", " "))}</h2><p>{html.escape(c)}</p><img src="{n}" alt="{n}">'
         for n, c in images)}
{_groups_html(groups)}
{drift_html}
<h2>Command</h2><pre>{html.escape(command)}</pre>
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2, default=str))}</pre>
</body></html>"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    files.append(index)
    log.info("report written to %s", index)
    return files

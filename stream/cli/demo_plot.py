"""``reports/demo/hit_rates.png``: the rolling hit rates of the three models over the demo's live events."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stream.cli.demo_score import MODELS

COLORS = {"metarec": "tab:green", "no_adaptation": "tab:blue", "popularity": "tab:orange"}


def rolling(outcomes: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` outcomes at each position (fewer at the start).

    >>> rolling(np.array([1.0, 0.0, 1.0, 1.0]), 2).tolist()
    [1.0, 0.5, 0.5, 1.0]
    """
    sums = np.cumsum(outcomes)
    lagged = np.concatenate([np.zeros(window), sums[:-window]]) if len(sums) > window else np.zeros(len(sums))
    counts = np.minimum(np.arange(1, len(outcomes) + 1), window)
    return (sums - lagged[: len(sums)]) / counts


def plot_hit_rates(outcomes: dict[str, np.ndarray], path: Path, rate: float, window: int = 500) -> Path:
    """Write the rolling hit rates (``window`` scored events) to ``path``; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(outcomes[MODELS[0]])
    window = max(1, min(window, n // 4 or 1))
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    for name in MODELS:
        y = outcomes[name]
        total = float(y.mean()) if n else float("nan")
        skip = min(100, window)  # the first points average too few events to mean anything
        ax.plot(np.arange(1, n + 1)[skip:], rolling(y, window)[skip:], color=COLORS[name],
                label=f"{name}  (all: {total:.3f})")
    ax.set_xlabel(f"scored live event (positive, known user) — replayed at {rate:g} events/s")
    ax.set_ylabel(f"hit rate@10, last {window} events")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title("Was the item in the list shown just before the event?")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

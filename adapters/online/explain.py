"""``because``: for each listed item, the item of the user's own window that contributes most to its score.

A ranking score is ``s(i) = (u + g·ctx)·Q_i + c_i + prior(window, i) + bonus_i`` (``seq``; ``mf`` has no context).
Two of its terms come from the window, event by event:

* the learned part, ``g · a_l · K_{j_l}·Q_i`` for window position ``l`` (attention weight ``a_l``, context
  embedding ``K`` of its item ``j_l``);
* the counted part, the co-occurrence prior ``w·log1p(Σ_l d_l·C[j_l, i] / damp_i)``, shared among positions in
  proportion to ``d_l·C[j_l, i]`` (their terms inside the logarithm).

The window item with the largest sum of both is the reason; none (``None``) when no position contributes a positive
amount. Nothing here is fitted after the fact: these are the terms the model ranked with.

Example
-------
>>> import numpy as np
>>> best_positions(np.array([[[0.2, -1.0], [0.5, -0.3]]]))   # 1 user, 2 window positions, 2 listed items
[[1, None]]
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from adapters.base import Adapter, SupportBatch
from adapters.online.items.table import ItemTable


def best_positions(contrib: np.ndarray) -> list[list[int | None]]:
    """``contrib`` ``[B, L, k]`` (window position × listed item) → per user and item the position of the largest
    positive contribution (None: no positive one)."""
    if contrib.shape[1] == 0:
        return [[None] * contrib.shape[2] for _ in range(contrib.shape[0])]
    arg = contrib.argmax(1)
    top = np.take_along_axis(contrib, arg[:, None, :], 1)[:, 0, :]
    return [[int(a) if t > 0 else None for a, t in zip(arg[n], top[n])] for n in range(contrib.shape[0])]


@torch.no_grad()
def explain(model: Adapter, side: ItemTable, windows: Sequence[np.ndarray], states: torch.Tensor, users: torch.Tensor,
            index: np.ndarray) -> list[list[str | None]]:
    """Item id of the reason for each listed row ``index`` ``[B, k]`` of each user: the rows of its window
    ``windows`` in the item table ``side``, its model ``states`` ``[B, state_dim]`` (users ``users``)."""
    b, k = index.shape
    if not any(len(w) for w in windows):
        return [[None] * k for _ in range(b)]
    support = SupportBatch.from_lists(windows, [np.full(len(w), np.nan) for w in windows], users)
    items = support.items.numpy()
    contrib = np.zeros((b, items.shape[1], k), np.float32)  # window position × listed item
    learned = model.window_affinity(states, support, torch.from_numpy(index))
    if learned is not None:  # seq: the learned, order-aware part
        contrib += learned.numpy()
    if side.config.prior_weight > 0:  # the counted part, shared in proportion to each position's term
        for n, w in enumerate(windows):
            if not len(w):
                continue
            terms, total = side.prior_terms(w, index[n])
            sums = terms.sum(0, keepdims=True)
            share = np.divide(terms, sums, out=np.zeros_like(terms), where=sums > 0)
            contrib[n, len(w) - len(terms):len(w)] += share * total
    ids = side.ids
    return [[None if p is None else ids[int(items[n, p])] for p in row]
            for n, row in enumerate(best_positions(contrib))]


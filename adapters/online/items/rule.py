"""The learner's side of the item rule: what one micro-batch teaches about items, as :class:`Contributions`.

:func:`contribute` turns a micro-batch's new events into one contribution per item, computed against the learner's
current :class:`~adapters.online.items.table.ItemTable` (what it has merged or applied so far):

* counts: each item's events, rated events and newest event time;
* rating: the step of each item's rating-bias correction (``bias_lr``, with ``bias_prior`` a shrunk running mean of
  its residuals) and the SGD step of its rating factors (``factor_lr``) on the pre-update errors
  ``prediction − rating``;
* ranking: one SGD step per event (``embed_lr``, summed over the batch's events) of the next-item softmax loss at
  the users' pre-update vectors, over the event's item and ``negatives`` items drawn once per micro-batch in
  proportion to popularity^0.75 (a sampled softmax with the log-Q correction: each logit minus ``log(K·Q_j)``;
  accidental hits masked). Neither the negatives nor an event's step depend on who else is in the batch: a batch of
  one event learns what it would in a batch of five hundred, and each item's step travels on its own.
  ``negatives`` 0: the whole catalogue (exact, and as costly as it sounds);
* co-occurrence: the in-link increments ``(item, neighbour)`` of every event with its user's last ``cooc_window``
  items;
* rows: an item whose rows the table has not published in this model version, or a young item created online (fewer
  than ``young_events`` events), sends its rows to set (kind INIT): the young item follows the items it co-occurs
  with (the co-occurrence-weighted mean of their rows), any other its current rows plus this batch's step; every
  other item sends its step (kind DELTA).

The owner merges them (:meth:`~adapters.online.items.table.ItemTable.merge`); the learner sees the result after the
owner's round trip (in one process: at once, :mod:`adapters.online.items.owner`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from adapters.base import Adapter
from adapters.online.items.contributions import DELTA, INIT, Contributions
from adapters.online.items.table import ItemTable

SAMPLER_POWER = 0.75  #: negatives are drawn ∝ (popularity + 1)^0.75 (word2vec's unigram^0.75)


@dataclass
class BatchItems:
    """A micro-batch's new events, as the item rule needs them (aligned arrays, one entry per event)."""

    rows: np.ndarray  #: int64 item rows (0: unknown, ignored)
    windows: Sequence[Sequence[int]]  #: each event's user's previous item rows, oldest first
    times: np.ndarray  #: float64 event times
    vectors: torch.Tensor | None  #: ``[n, d]`` the users' pre-update ranking vectors (None: no ranking step)
    rating_vectors: torch.Tensor | None  #: ``[n, r]`` their rating vectors (None: no factor step)
    errors: np.ndarray  #: float64 pre-update ``prediction − rating`` (NaN: not rated)


def contribute(table: ItemTable, space: str, batch: BatchItems, seed: int, layout: dict[str, int] | None = None
               ) -> Contributions:
    """One contribution per item of ``batch`` and per sampled negative (see the module docstring).

    ``layout`` names the offset of each item table (``item_emb``, ``item_bias``, ``item_rate``) in the flattened
    rows (:mod:`adapters.online.items.tablerows`); None: the table has no rows (counts, rating bias, in-links only).
    """
    cfg = table.config
    ok = batch.rows > 0
    if not ok.any():
        return Contributions.empty(space, table.rows.width if table.rows is not None else 0)
    ev = np.flatnonzero(ok)
    rows = batch.rows[ev]
    err = batch.errors[ev]
    items, inverse = np.unique(rows, return_inverse=True)
    m = len(items)
    events = np.bincount(inverse, minlength=m).astype(np.float64)
    t = np.full(m, -np.inf)
    np.maximum.at(t, inverse, batch.times[ev])
    rated_ev = np.isfinite(err)
    rated = np.bincount(inverse, weights=rated_ev, minlength=m)
    d_rating = _rating_bias_steps(table, items, inverse, err, rated)
    links = _links(table, rows, [batch.windows[n] for n in ev.tolist()], inverse)
    width = table.rows.width if table.rows is not None and layout is not None else 0
    steps = np.zeros((m, width), np.float32)
    negatives, neg_steps = np.zeros(0, np.int64), np.zeros((0, width), np.float32)
    if width:
        u = None if batch.vectors is None else batch.vectors[torch.from_numpy(ev)]
        v = None if batch.rating_vectors is None else batch.rating_vectors[torch.from_numpy(ev)]
        negatives, neg_steps = _ranking_steps(table, layout, rows, inverse, u, steps, seed)
        _factor_steps(cfg.factor_lr, layout, inverse, v, err, steps)
    # one entry per item: an item of the batch may also have been drawn as a negative (its steps add up)
    every, inv = np.unique(np.concatenate([items, negatives]), return_inverse=True)
    n_all = len(every)
    tables = np.zeros((n_all, width), np.float32)
    tables[inv[:m]] = steps  # the batch's items are distinct
    if len(negatives):  # a negative may have been drawn more than once
        torch.from_numpy(tables).index_add_(0, torch.from_numpy(inv[m:]), torch.from_numpy(neg_steps))
    occurred = np.zeros(n_all, bool)
    occurred[inv[:m]] = True

    def spread(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full(n_all, fill)
        out[inv[:m]] = values
        return out

    kind = np.full(n_all, DELTA if width else 0, np.uint8)
    entry = inv[:m][links[0]].astype(np.int32)
    if width:
        _rows_to_set(table, space, every, tables, kind, (entry, links[1], links[2]), occurred)
    ids = table.ids
    return Contributions([ids[r] for r in every.tolist()], space, spread(t, -np.inf), spread(events),
                         spread(rated), spread(d_rating), kind, tables, entry, [ids[j] for j in links[1].tolist()],
                         links[2], rows=every, link_rows=links[1], origin=(table.vocab, table.vocab.evicted))


def _rating_bias_steps(table: ItemTable, items: np.ndarray, inverse: np.ndarray, err: np.ndarray,
                       rated: np.ndarray) -> np.ndarray:
    """Each item's rating-bias correction step: ``lr · (−Σ errors − reg · rated · δ)``."""
    cfg = table.config
    if cfg.bias_lr <= 0:
        return np.zeros(len(items))
    good = np.isfinite(err)
    step = np.bincount(inverse[good], weights=-err[good], minlength=len(items)).astype(np.float64)
    step -= cfg.bias_reg * rated * table.rating_delta[items]
    lr = np.full(len(items), cfg.bias_lr)
    if cfg.bias_prior > 0:
        lr = np.maximum(cfg.bias_lr, 1.0 / (table.rated[items] + rated + cfg.bias_prior))
    return np.where(rated > 0, lr * step, 0.0)


def _links(table: ItemTable, rows: np.ndarray, windows: Sequence[Sequence[int]], inverse: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-link increments ``(entry, neighbour row, count)``: each event's item met its user's last items."""
    w = table.config.cooc_window
    js = [np.asarray(list(win)[-w:], np.int64) for win in windows]
    lens = np.fromiter((len(j) for j in js), np.int64, len(js))
    if not lens.sum():
        return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.float32)
    jj = np.concatenate(js)
    kk = np.repeat(inverse, lens)
    ii = np.repeat(rows, lens)
    ok = (jj > 0) & (jj != ii)
    span = max(int(table.capacity), int(jj.max()) + 1)
    pairs, counts = np.unique(kk[ok] * span + jj[ok], return_counts=True)  # (entry, neighbour) as one key
    return (pairs // span).astype(np.int32), pairs % span, counts.astype(np.float32)


def _ranking_steps(table: ItemTable, layout: dict[str, int], rows: np.ndarray, inverse: np.ndarray,
                   u: torch.Tensor | None, steps: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The sampled-softmax step of the ranking rows: into ``steps`` for the batch's items; the negatives and
    their steps returned."""
    cfg = table.config
    width = steps.shape[1]
    if u is None or cfg.embed_lr <= 0 or "item_emb" not in layout:
        return np.zeros(0, np.int64), np.zeros((0, width), np.float32)
    active = np.flatnonzero(table.vocab.active())
    emb_at, bias_at = layout["item_emb"], layout["item_bias"]
    dim = u.shape[1]
    K = cfg.negatives
    if K <= 0 or K >= len(active):  # the whole catalogue: exact
        negatives, logq, pos_logq = active, torch.zeros(len(active)), torch.zeros(len(rows))
    else:
        weights = np.zeros(table.capacity)
        weights[active] = np.power(table.popularity(table.stream_time)[active] + 1.0, SAMPLER_POWER)
        q = weights / weights.sum()
        gen = torch.Generator().manual_seed(int(seed))
        negatives = active[torch.multinomial(torch.from_numpy(q[active]), K, replacement=True, generator=gen).numpy()]
        logq = torch.from_numpy(np.log(K * q[negatives]).astype(np.float32))
        pos_logq = torch.from_numpy(np.log(K * np.maximum(q[rows], 1e-30)).astype(np.float32))
    cand = np.concatenate([rows, negatives])
    flat = torch.from_numpy(table.rows.get(cand))
    emb, bias = flat[:, emb_at:emb_at + dim], flat[:, bias_at]
    u = u.to(emb.dtype)
    pos = (u * emb[:len(rows)]).sum(1) + bias[:len(rows)] - pos_logq
    neg = u @ emb[len(rows):].t() + bias[len(rows):] - logq
    neg = neg.masked_fill(torch.from_numpy(rows[:, None] == negatives[None, :]), -torch.inf)  # accidental hits
    p = torch.softmax(torch.cat([pos[:, None], neg], 1), dim=1)
    scale = cfg.embed_lr  # per event, as online SGD: an event's step does not depend on the batch it came in
    g_pos = (p[:, 0] - 1.0)[:, None]
    g_neg = p[:, 1:]
    item_emb = torch.zeros(len(steps), dim)
    item_emb.index_add_(0, torch.from_numpy(inverse), -scale * g_pos * u)
    item_bias = torch.zeros(len(steps))
    item_bias.index_add_(0, torch.from_numpy(inverse), -scale * g_pos[:, 0])
    steps[:, emb_at:emb_at + dim] += item_emb.numpy()
    steps[:, bias_at] += item_bias.numpy()
    neg_steps = np.zeros((len(negatives), width), np.float32)
    neg_steps[:, emb_at:emb_at + dim] = (-scale * (g_neg.t() @ u)).numpy()
    neg_steps[:, bias_at] = (-scale * g_neg.sum(0)).numpy()
    return negatives, neg_steps


def _factor_steps(lr: float, layout: dict[str, int], inverse: np.ndarray, v: torch.Tensor | None, err: np.ndarray,
                  steps: np.ndarray) -> None:
    """The SGD step of the items' rating factors on the squared rating error, into ``steps``."""
    good = np.isfinite(err)
    if lr <= 0 or v is None or not good.any() or "item_rate" not in layout:
        return
    e = torch.from_numpy(err[good]).to(v.dtype)
    g = torch.zeros(len(steps), v.shape[1], dtype=v.dtype)
    g.index_add_(0, torch.from_numpy(inverse[good]), -lr * e[:, None] * v[torch.from_numpy(good)])
    at = layout["item_rate"]
    steps[:, at:at + v.shape[1]] += g.numpy()


def _rows_to_set(table: ItemTable, space: str, items: np.ndarray, tables: np.ndarray, kind: np.ndarray,
                 links: tuple[np.ndarray, np.ndarray, np.ndarray], occurred: np.ndarray) -> None:
    """Turn into rows to set (kind INIT) the entries whose rows the table has not published in ``space`` or whose
    item is young; a young item created online follows the items it co-occurs with."""
    cfg = table.config
    published = table.space[items] == space
    young = (table.total[items] < cfg.young_events) & table.vocab.online[items]
    sets = ~published | young
    if not sets.any():
        return
    idx = np.flatnonzero(sets)
    tables[idx] += table.rows.get(items[idx])  # current rows + this batch's step
    kind[idx] = INIT
    follow = idx[young[idx] & occurred[idx]]
    if len(follow):
        weights = table.cooc(items[follow]).astype(np.float64)
        where = {int(k): n for n, k in enumerate(follow.tolist())}
        for k, j, c in zip(links[0].tolist(), links[1].tolist(), links[2].tolist()):
            if k in where:
                weights[where[k], j] += c
        weights[:, 0] = 0.0
        weights[np.arange(len(follow)), items[follow]] = 0.0
        total = weights.sum(1)
        has = total > 0
        if has.any():
            cols = np.flatnonzero(weights[has].sum(0))
            mean = (weights[has][:, cols] / total[has, None]) @ table.rows.get(cols)
            tables[follow[has]] = mean.astype(np.float32)


def layout_of(adapter: Adapter) -> dict[str, int] | None:
    """Offset of each item table in the flattened rows of ``adapter`` (None: it has no growable item tables)."""
    names = adapter.ITEM_TABLES
    if not names:
        return None
    widths = [int(np.prod(t.shape[1:], dtype=np.int64)) for t in adapter.item_tables()]
    return dict(zip(names, np.cumsum([0] + widths[:-1]).tolist()))

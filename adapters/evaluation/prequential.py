"""The prequential (test-then-train) protocol: the one every online figure of the project uses.

Exactly as the contract (``CONTRACT.md``, "Prequential protocol") defines it:

* events sorted by timestamp (stable); the first ``history`` fraction is *history*: every model learns from it,
  nothing is scored;
* every later event is scored before it is learned from;
* ``rmse``/``mae`` over every scored event with an explicit rating;
* ranking over scored *positive* events (rating ≥ 4, or implicit): the candidates are every item seen in an
  earlier event (history included) minus the items this user interacted with before; an item never seen before
  (or one this user already interacted with) is a miss; rank = (#candidates scored strictly higher) +
  (#other candidates with an equal score) / 2, so a constant scorer earns nothing; ``hr@10`` = share of scored
  positives with rank < 10; ``ndcg@10`` = Σ 1/log2(rank + 2) over those hits / #scored positives.

This module is the protocol only: it knows nothing about any model. A model is a :class:`StreamModel`: it
learns a range of events, and *steps* through a range of events, scoring each one before it learns from it.
Micro-batched models (the :class:`~adapters.online.learner.OnlineLearner`) score a whole batch with the states they
had before the batch and then learn the batch, as the stream worker does; per-event models (popularity, River)
score and learn event by event. Ranks (:mod:`adapters.evaluation.ranks`) and the top-k lists behind the beyond-accuracy
figures (:mod:`adapters.evaluation.listmetrics`) are computed here, vectorized over the batch, with exact per-event candidate
sets. The driver of a whole evaluation run (θ0, the models, the JSON and the report) is
:mod:`adapters.evaluation.prequential_run`.

Example
-------
>>> import numpy as np
>>> from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
>>> from adapters.evaluation.baselines import Popularity
>>> stream = EventStream.from_arrays(
...     users=["a", "b", "c", "d"], items=["x", "x", "y", "x"], ratings=[5, 5, 5, 5], history=0.5)
>>> result = run_protocol(stream, [Popularity(stream)], PrequentialConfig(history=0.5), progress=False)
>>> result.summary()["popularity"]["hr@10"]   # c: x is the only candidate, y never seen -> miss; d: x -> hit
0.5
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from adapters.errors import MetarecError
from adapters.evaluation.listmetrics import beyond_accuracy, new_item_hit_rate, top_k_lists
from adapters.evaluation.progressbar import event_progress
from adapters.evaluation.ranks import candidate_mask, ranks_from_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrequentialConfig:
    """Settings of the protocol (not of any model)."""

    history: float = 0.5  #: leading fraction of the events that is history (learned, not scored)
    k: int = 10  #: cut-off of hr@k / ndcg@k
    batch_size: int = 256  #: max events of a micro-batch (events are scored with the states before their batch)
    #: max event-time span of a micro-batch, in seconds: a worker collecting ``--batch-seconds`` of a live stream never
    #: holds events further apart than that; None = cut by ``batch_size`` only (a replay at full speed)
    batch_seconds: float | None = 1.0
    positive_threshold: float = 4.0  #: explicit ratings ≥ this are positive events

    def __post_init__(self) -> None:
        if not 0.0 < self.history < 1.0:
            raise MetarecError(f"--history must be strictly between 0 and 1, got {self.history}")
        if self.k < 1:
            raise MetarecError(f"k must be ≥ 1, got {self.k}")
        if self.batch_size < 1:
            raise MetarecError(f"batch size must be ≥ 1, got {self.batch_size}")
        if self.batch_seconds is not None and not self.batch_seconds > 0:
            raise MetarecError(f"batch seconds must be > 0, got {self.batch_seconds}")


def micro_batches(timestamps: np.ndarray, lo: int, hi: int, max_events: int,
                  max_seconds: float | None) -> list[tuple[int, int]]:
    """Cut events ``[lo, hi)`` (sorted by time) into micro-batches as a worker at live pace would see them.

    A batch ends after ``max_events`` events or before the first event ``max_seconds`` or more after the batch's
    first event, whichever comes first.

    >>> micro_batches(np.array([0., 0., 0.5, 1., 1., 7.]), 0, 6, max_events=4, max_seconds=1.0)
    [(0, 3), (3, 5), (5, 6)]
    >>> micro_batches(np.array([0., 0., 0.5, 1., 1., 7.]), 0, 6, max_events=4, max_seconds=None)
    [(0, 4), (4, 6)]
    """
    if max_seconds is None:
        return [(a, min(a + max_events, hi)) for a in range(lo, hi, max_events)]
    ts = np.asarray(timestamps[lo:hi], dtype=np.float64)
    out: list[tuple[int, int]] = []
    a = 0
    while a < len(ts):
        # first index whose time is ≥ ts[a] + max_seconds, capped by max_events
        b = min(int(np.searchsorted(ts, ts[a] + max_seconds, side="left")), a + max_events)
        b = max(b, a + 1)
        out.append((lo + a, lo + b))
        a = b
    return out


@dataclass
class EventStream:
    """A dataset's events as integer codes, in stream order, with the history boundary.

    ``items`` are *columns*: items numbered in order of first appearance, so the items seen before event ``n``
    are exactly the columns ``c`` with ``first_pos[c] < n``.
    """

    user_ids: np.ndarray  #: object [E] original user ids
    item_ids: np.ndarray  #: object [E] original item ids
    users: np.ndarray  #: int64 [E] user codes
    items: np.ndarray  #: int64 [E] item columns
    ratings: np.ndarray  #: float32 [E]; NaN = implicit
    timestamps: np.ndarray  #: float64 [E]
    item_names: list[str]  #: column → item id
    first_pos: np.ndarray  #: int64 [n_cols] position of each item's first event
    positive: np.ndarray  #: bool [E] rating ≥ threshold or implicit
    start: int  #: first scored event (= int(E * history))
    name: str = ""
    item_genres: np.ndarray | None = None  #: float32 [n_cols, G] multi-hot genres, when the dataset has them

    @property
    def n_cols(self) -> int:
        return len(self.item_names)

    @property
    def n_users(self) -> int:
        return int(self.users.max()) + 1 if len(self.users) else 0

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @classmethod
    def from_arrays(cls, users: Sequence[str], items: Sequence[str], ratings: Sequence[float],
                    timestamps: Sequence[float] | None = None, history: float = 0.5,
                    positive_threshold: float = 4.0, name: str = "") -> EventStream:
        """Encode events; they are (stably) sorted by timestamp when timestamps are given."""
        user_ids = np.asarray(list(users), dtype=object)
        item_ids = np.asarray(list(items), dtype=object)
        rt = np.asarray(ratings, dtype=np.float32)
        ts = np.arange(len(user_ids), dtype=np.float64) if timestamps is None else np.asarray(timestamps, np.float64)
        if not len(user_ids) == len(item_ids) == len(rt) == len(ts):
            raise MetarecError("users, items, ratings and timestamps must have the same length")
        if len(user_ids) < 2:
            raise MetarecError(f"a prequential evaluation needs at least 2 events, got {len(user_ids)}")
        order = np.argsort(ts, kind="stable")
        user_ids, item_ids, rt, ts = user_ids[order], item_ids[order], rt[order], ts[order]
        _, ucodes = np.unique(user_ids.astype(str), return_inverse=True)
        names, first, inverse = np.unique(item_ids.astype(str), return_index=True, return_inverse=True)
        by_first = np.argsort(first, kind="stable")  # column c = c-th distinct item to appear
        col_of = np.empty_like(by_first)
        col_of[by_first] = np.arange(len(by_first))
        start = int(len(user_ids) * history)
        if start >= len(user_ids):
            raise MetarecError(f"--history {history} leaves no event to score")
        with np.errstate(invalid="ignore"):
            positive = np.isnan(rt) | (rt >= positive_threshold)
        return cls(user_ids=user_ids, item_ids=item_ids, users=ucodes.astype(np.int64).ravel(),
                   items=col_of[inverse.ravel()].astype(np.int64), ratings=rt, timestamps=ts,
                   item_names=[str(names[i]) for i in by_first], first_pos=first[by_first].astype(np.int64),
                   positive=positive, start=start, name=name)

    @classmethod
    def from_dataset(cls, dataset: object, history: float = 0.5, positive_threshold: float = 4.0) -> EventStream:
        """Encode an :class:`adapters.data.datasets.Dataset` (already sorted by timestamp, stable)."""
        ds = dataset
        out = cls.from_arrays(ds.user_ids, ds.item_ids, ds.ratings, ds.timestamps,  # type: ignore[attr-defined]
                              history=history, positive_threshold=positive_threshold, name=getattr(ds, "name", ""))
        features = getattr(ds, "item_features", None)
        if features is not None and features.genres.shape[1]:
            out.item_genres = features.genre_rows(out.item_names)
        return out


@dataclass
class Scores:
    """What a model says about a batch ``[lo, hi)`` before learning it.

    ``ratings``: ``[hi-lo]`` predicted ratings (None: the model predicts none). ``ranking``: ``[len(rank_rows),
    n_cols]`` scores of every item column for the batch rows asked for (None: the model does not rank).
    """

    ratings: np.ndarray | None
    ranking: np.ndarray | None


class StreamModel(Protocol):
    """A model under the prequential protocol."""

    name: str

    def learn(self, lo: int, hi: int) -> None:
        """Learn events ``[lo, hi)`` without scoring them (the history)."""
        ...

    def step(self, lo: int, hi: int, rank_rows: np.ndarray) -> Scores:
        """Score events ``[lo, hi)``, each before learning it, then learn them all.

        ``rank_rows``: offsets (into the batch) of the events whose item ranking is needed.
        """
        ...


class SeenTracker:
    """Which items each user interacted with before each event (the candidate exclusions)."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.user_items: list[list[int]] = [[] for _ in range(stream.n_users)]
        self.pairs: set[int] = set()

    def _key(self, u: int, c: int) -> int:
        return u * self.stream.n_cols + c

    def advance(self, lo: int, hi: int) -> None:
        """Record events ``[lo, hi)`` as interacted."""
        s = self.stream
        for u, c in zip(s.users[lo:hi].tolist(), s.items[lo:hi].tolist()):
            key = self._key(u, c)
            if key not in self.pairs:
                self.pairs.add(key)
                self.user_items[u].append(c)

    def exclusions(self, lo: int, hi: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the batch rows ``rows`` (offsets from ``lo``): (row index into ``rows``, excluded column) pairs
        of the items each event's user interacted with before that event, and a bool ``[len(rows)]`` telling
        whether the event's own item is one of them (a repeat: a miss by definition)."""
        s = self.stream
        wanted = set(rows.tolist())
        extra: dict[int, list[int]] = {}  # in-batch interactions so far, per user
        extra_pairs: set[int] = set()
        out_rows: list[np.ndarray] = []
        out_cols: list[np.ndarray] = []
        repeat = np.zeros(len(rows), dtype=bool)
        slot = 0
        for off in range(hi - lo):
            u, c = int(s.users[lo + off]), int(s.items[lo + off])
            if off in wanted:
                before = self.user_items[u] + extra.get(u, [])
                if before:
                    out_cols.append(np.asarray(before, dtype=np.int64))
                    out_rows.append(np.full(len(before), slot, dtype=np.int64))
                key = self._key(u, c)
                repeat[slot] = key in self.pairs or key in extra_pairs
                slot += 1
            key = self._key(u, c)
            if key not in self.pairs and key not in extra_pairs:
                extra_pairs.add(key)
                extra.setdefault(u, []).append(c)
        if out_rows:
            return np.concatenate(out_rows), np.concatenate(out_cols), repeat
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, repeat


@dataclass
class ModelTrace:
    """Everything one model said along the stream (for figures, curves and the drift analysis)."""

    name: str
    predictions: list[np.ndarray] = field(default_factory=list)  #: per batch, [B] (NaN: no prediction)
    ranks: list[np.ndarray] = field(default_factory=list)  #: per batch, [#positives] (inf: miss)
    seconds: float = 0.0
    lists: list[np.ndarray] = field(default_factory=list)  #: per ranked batch, [#positives, k] top-k (-1: none)
    list_positions: list[np.ndarray] = field(default_factory=list)  #: per ranked batch, [#positives] positions

    def prediction_array(self) -> np.ndarray:
        return np.concatenate(self.predictions) if self.predictions else np.zeros(0, np.float64)

    def rank_array(self) -> np.ndarray:
        return np.concatenate(self.ranks) if self.ranks else np.zeros(0, np.float64)


@dataclass
class PrequentialResult:
    """Traces of every model over the scored part of a stream."""

    stream: EventStream
    config: PrequentialConfig
    traces: dict[str, ModelTrace]

    @property
    def scored_positions(self) -> np.ndarray:
        return np.arange(self.stream.start, len(self.stream))

    @property
    def positive_positions(self) -> np.ndarray:
        p = self.scored_positions
        return p[self.stream.positive[p]]

    def summary(self) -> dict[str, dict[str, float]]:
        """``{name: {"rmse", "mae", "hr@10", "ndcg@10", ...}}``: rating keys for models that predict ratings;
        ``new_item_hr@10``, ``coverage@10``, ``novelty@10`` and ``diversity@10`` (genres only) for models whose
        top-k lists were recorded (:mod:`adapters.evaluation.listmetrics`)."""
        k, s = self.config.k, self.stream
        y = self.stream.ratings[self.stream.start:].astype(np.float64)
        out: dict[str, dict[str, float]] = {}
        for name, tr in self.traces.items():
            fig: dict[str, float] = {}
            pred = tr.prediction_array()
            ok = ~np.isnan(y) & ~np.isnan(pred) if len(pred) else np.zeros(0, bool)
            if ok.any():
                err = pred[ok] - y[ok]
                fig["rmse"] = float(np.sqrt(np.mean(err ** 2)))
                fig["mae"] = float(np.mean(np.abs(err)))
            ranks = tr.rank_array()
            if len(ranks):
                hits = ranks < k
                fig[f"hr@{k}"] = float(hits.mean())
                fig[f"ndcg@{k}"] = float(np.sum(1.0 / np.log2(ranks[hits] + 2.0)) / len(ranks))
            if tr.lists and len(ranks) == len(self.positive_positions):
                new_hr = new_item_hit_rate(ranks, s.first_pos[s.items[self.positive_positions]], s.start, k)
                if new_hr is not None:  # no positive on a new item: no figure
                    fig[f"new_item_hr@{k}"] = new_hr
            if tr.lists:
                fig.update(beyond_accuracy(np.concatenate(tr.lists), np.concatenate(tr.list_positions), s.items,
                                           s.n_cols, s.item_genres, k))
            out[name] = fig
        return out


def run_protocol(stream: EventStream, models: Sequence[StreamModel], config: PrequentialConfig,
                 progress: bool = True) -> PrequentialResult:
    """Run every model through the history then the scored part of ``stream``; return their traces."""
    traces = {m.name: ModelTrace(m.name) for m in models}
    if len(traces) != len(models):
        raise MetarecError("two models share a name")
    tracker = SeenTracker(stream)
    n, start = len(stream), stream.start
    history = micro_batches(stream.timestamps, 0, start, config.batch_size, config.batch_seconds)
    scored = micro_batches(stream.timestamps, start, n, config.batch_size, config.batch_seconds)
    bar = event_progress(progress)
    with bar:
        task = bar.add_task("history", total=len(models) * start) if bar else None
        for m in models:
            t0 = time.perf_counter()
            for lo, hi in history:  # the same micro-batches as the scored part: as the worker would have learned
                m.learn(lo, hi)
                if bar and hi % 2048 < hi - lo + 1:
                    bar.update(task, completed=start * models.index(m) + hi, description=f"history · {m.name}")
            traces[m.name].seconds += time.perf_counter() - t0
        tracker.advance(0, start)
        if bar:
            bar.update(task, visible=False)
            task = bar.add_task("scoring", total=n - start)
        for lo, hi in scored:
            rows = np.flatnonzero(stream.positive[lo:hi])
            excl_rows, excl_cols, repeat = tracker.exclusions(lo, hi, rows)
            targets = stream.items[lo:hi][rows]
            cand = candidate_mask(lo + rows, stream.first_pos, excl_rows, excl_cols)
            for m in models:
                t0 = time.perf_counter()
                out = m.step(lo, hi, rows)
                tr = traces[m.name]
                tr.predictions.append(np.full(hi - lo, np.nan) if out.ratings is None
                                      else np.asarray(out.ratings, np.float64))
                if out.ranking is not None and len(rows):
                    tr.ranks.append(ranks_from_mask(np.asarray(out.ranking), targets, cand, repeat))
                elif len(rows):
                    tr.ranks.append(np.full(len(rows), np.inf))
                tr.seconds += time.perf_counter() - t0
                if out.ranking is not None and len(rows):  # the lists shown (metrics only: not model time)
                    tr.lists.append(top_k_lists(np.asarray(out.ranking), cand, config.k))
                    tr.list_positions.append(lo + rows)
            tracker.advance(lo, hi)
            if bar:
                bar.update(task, advance=hi - lo)
    for tr in traces.values():
        log.info("%s: %.1f s", tr.name, tr.seconds)
    return PrequentialResult(stream=stream, config=config, traces=traces)


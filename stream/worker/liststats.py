"""Rolling catalog coverage and list diversity of the lists a worker publishes.

Backs the gauges ``metarec_list_coverage_ratio`` and ``metarec_list_diversity``: every micro-batch the worker calls
:meth:`ListStats.on_published` with the lists it publishes (the same place it feeds
:class:`~stream.worker.hitrate.OnlineHitRate`). Both figures are over the last ``window`` lists (default 1,000),
whatever time they span, so they do not depend on the traffic rate:

* **coverage** (:meth:`ListStats.coverage`): distinct items in the window's lists ÷ the items the worker can
  recommend (``metarec_items_total``), capped at 1 (an item evicted from the table may still be in the window).
  The online counterpart of the prequential ``coverage@10`` (:func:`adapters.evaluation.listmetrics.coverage`),
  which counts over every scored list instead of a window: the two are comparable only in trend;
* **diversity** (:attr:`ListStats.diversity`): mean over the last ``window`` lists it was computed for of the mean
  pairwise ``1 − cos`` of the listed items' ranking embeddings, taken from the model when the list is published
  (:meth:`adapters.online.learner.OnlineLearner.item_vectors`). It is computed for every list of a micro-batch of
  at most ``sample`` (64) lists, else for 64 evenly spaced ones (a sample, to stay cheap on large batches). Same
  formula as the offline :func:`adapters.evaluation.listmetrics.diversity` (Σ_{a<b} u_a·u_b = (|Σ u|² − Σ |u|²) / 2
  over the unit vectors; a zero vector has cosine 0 with everything), with embeddings instead of genres. NaN when
  no list of ≥ 2 items is in the window or the model has no item embeddings.

Cost: a few dict updates per listed item and one vectorised numpy pass per batch (``python -m
stream.worker.liststats`` measures it per list). Thread-safe, bounded memory (``window`` lists).

Example
-------
>>> import numpy as np
>>> vectors = {"a": [1.0, 0.0], "b": [1.0, 0.0], "c": [0.0, 1.0]}
>>> stats = ListStats(window=2)
>>> stats.on_published([["a", "b", "c"], ["a", "b"]], lambda ids: np.array([vectors[i] for i in ids]))
>>> stats.coverage(catalog=6), round(stats.diversity, 4)      # 3 of 6 items; lists (2/3) and 0
(0.5, 0.3333)
>>> stats.on_published([["c"]], None)                          # pushes out the first list
>>> stats.coverage(catalog=6), stats.diversity                 # {a, b, c}; one list of ≥ 2 items left: 0
(0.5, 0.0)
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np

#: ``item ids → [n, d]`` embeddings (row order of the ids), or None when the model has none
VectorLookup = Callable[[list[str]], "np.ndarray | None"]


def pairwise_diversity(lists: Sequence[Sequence[str]], vectors: VectorLookup | None) -> list[float]:
    """Each list's mean pairwise ``1 − cos`` of its items' vectors (NaN for a list of < 2 items or no vectors).

    >>> table = {"x": [1.0, 0.0], "y": [0.0, 2.0]}
    >>> pairwise_diversity([["x", "y"], ["x"]], lambda ids: np.array([table[i] for i in ids]))
    [1.0, nan]
    """
    lengths = np.fromiter(map(len, lists), np.int64, len(lists))
    return _diversities([i for items in lists for i in items], lengths, vectors).tolist()


def _diversities(flat: list[str], lengths: np.ndarray, vectors: VectorLookup | None) -> np.ndarray:
    """:func:`pairwise_diversity` of the lists ``flat`` holds one after the other (``lengths`` items each)."""
    out = np.full(len(lengths), np.nan)
    keep = lengths >= 2
    if vectors is None or not keep.any():
        return out
    if not keep.all():
        flat = [i for i, ok in zip(flat, np.repeat(keep, lengths)) if ok]
    vec = vectors(flat)
    if vec is None:
        return out
    vec = np.asarray(vec, dtype=np.float32)
    norm = np.sqrt(np.einsum("ij,ij->i", vec, vec))
    unit = vec / np.maximum(norm, np.float32(1e-30))[:, None]  # a zero vector stays zero
    nonzero = (norm > 0).astype(np.float64)  # |u|² of each unit vector: 1, or 0 for a zero vector
    n = lengths[keep]
    if (n == n[0]).all():  # the usual case, every list of length k: no segment arithmetic
        summed = unit.reshape(len(n), int(n[0]), -1).sum(axis=1, dtype=np.float64)
        squares = nonzero.reshape(len(n), int(n[0])).sum(axis=1)
    else:
        starts = np.concatenate(([0], np.cumsum(n)[:-1]))
        summed = np.add.reduceat(unit, starts, axis=0, dtype=np.float64)
        squares = np.add.reduceat(nonzero, starts)
    sim = (np.einsum("ij,ij->i", summed, summed) - squares) / 2.0
    out[keep] = 1.0 - sim / (n * (n - 1) / 2.0)
    return out


class ListStats:
    """Coverage and diversity over the last ``window`` published lists (see the module docstring).

    Coverage bookkeeping is vectorised: every item ever listed has a slot, ``_newest[slot]`` is the number of the
    newest list that held it; the items of the window are the slots whose number is above the window's start.
    Slots of items that left the window are recycled when they outnumber the live ones.
    """

    def __init__(self, window: int = 1_000, sample: int = 64) -> None:
        if window < 1 or sample < 1:
            raise ValueError(f"window and sample must be >= 1, got {window}, {sample}")
        self.window = int(window)
        self.sample = int(sample)  #: most lists of one batch whose diversity is computed (evenly spaced)
        self._sampled = 0  #: lists whose diversity was computed so far
        self._seq = 0  #: lists published so far (the newest list's number)
        self._slot: dict[str, int] = {}
        self._newest = np.zeros(1024, np.int64)  #: slot → number of the newest list holding its item (0: none)
        self._divs = np.full(self.window, np.nan)  #: ring: sampled list n's diversity at n % window (NaN: none)
        self._lock = threading.Lock()

    def on_published(self, lists: Sequence[Sequence[str]], vectors: VectorLookup | None) -> None:
        """Add a batch's published lists (item ids, best first); ``vectors`` looks up their embeddings."""
        if not lists:
            return
        flat = [i for items in lists for i in items]
        lengths = np.fromiter(map(len, lists), np.int64, len(lists))
        step = -(-len(lists) // self.sample)  # every step-th list: at most `sample` of them
        if step == 1:
            divs = _diversities(flat, lengths, vectors)
        else:
            divs = _diversities([i for items in lists[::step] for i in items], lengths[::step], vectors)
        with self._lock:
            numbers = np.arange(self._seq + 1, self._seq + 1 + len(lists))
            self._seq += len(lists)
            slots = self._slots(flat)  # (may replace self._newest: before indexing it)
            self._newest[slots] = np.repeat(numbers, lengths)  # an item listed twice: either number, both in the batch
            sampled = np.arange(self._sampled, self._sampled + len(divs))
            self._sampled += len(divs)
            self._divs[sampled[-self.window:] % self.window] = divs[-self.window:]

    def _slots(self, flat: list[str]) -> np.ndarray:
        slot = self._slot
        found = list(map(slot.get, flat))
        if None in found:
            for n, item in enumerate(flat):
                if found[n] is None:
                    found[n] = slot.setdefault(item, len(slot))
            if len(slot) > len(self._newest):
                self._compact(room=len(flat))
                slot = self._slot
                found = [slot.setdefault(item, len(slot)) for item in flat]
        return np.fromiter(found, np.int64, len(found))

    def _compact(self, room: int) -> None:
        """Keep the slots of the items in the window only, with ``room`` more free slots at least."""
        live = self._newest > max(0, self._seq - self.window)
        items = [item for item, s in self._slot.items() if s < len(live) and live[s]]
        numbers = self._newest[[self._slot[i] for i in items]]
        self._slot = {item: n for n, item in enumerate(items)}
        size = max(1024, 2 * (len(items) + room))
        self._newest = np.zeros(size, np.int64)
        self._newest[:len(items)] = numbers

    def coverage(self, catalog: int) -> float:
        """Distinct listed items in the window ÷ ``catalog`` items, at most 1 (0 for an empty catalog)."""
        with self._lock:
            distinct = int(np.count_nonzero(self._newest[:len(self._slot)] > max(0, self._seq - self.window)))
        return min(1.0, distinct / catalog) if catalog > 0 else 0.0

    @property
    def diversity(self) -> float:
        """Mean diversity of the window's lists of ≥ 2 items (NaN when there is none)."""
        with self._lock:
            counted = self._divs[~np.isnan(self._divs)]
        return float(counted.mean()) if counted.size else math.nan

    @property
    def lists(self) -> int:
        """Lists in the window."""
        return min(self._seq, self.window)


def _benchmark(batches: int = 200, batch_lists: int = 250, k: int = 10, n_items: int = 3_700,
               dim: int = 64) -> float:
    """CPU µs per list of :meth:`ListStats.on_published` (embeddings from a real :class:`OnlineLearner` over an
    ``mf`` model, :meth:`~adapters.online.learner.OnlineLearner.item_vectors`) plus the two gauge reads."""
    import time

    from adapters.meta.checkpoint import Checkpoint
    from adapters.models import FeatureTables, build_model
    from adapters.online.learner import OnlineLearner

    ids = ["<unk>"] + [str(i) for i in range(1, n_items)]
    model = build_model("mf", n_items=n_items, tables=FeatureTables.empty(n_items), config={"dim": dim, "rating_dim": 4})
    learner = OnlineLearner(Checkpoint.from_adapter(model, item_ids=ids, meta="fomaml"))
    rng = np.random.default_rng(0)
    work = [[[ids[j] for j in rng.choice(np.arange(1, n_items), k, replace=False)] for _ in range(batch_lists)]
            for _ in range(batches)]
    stats = ListStats()
    t0 = time.process_time()  # CPU time of this process: what the worker would spend (robust to a busy machine)
    for lists in work:
        stats.on_published(lists, learner.item_vectors)
        stats.coverage(n_items), stats.diversity
    return (time.process_time() - t0) / (batches * batch_lists) * 1e6


if __name__ == "__main__":  # pragma: no cover - the micro-benchmark quoted in the README
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for batch_lists, batches in ((250, 200), (20, 2500)):
        logging.getLogger(__name__).info(
            "ListStats: %.2f CPU µs per list (batches of %d lists of 10 items, 64-d mf embeddings of 3,700 items)",
            _benchmark(batches=batches, batch_lists=batch_lists), batch_lists)

"""The ``cooccurrence`` baseline: online item-item co-occurrence over each user's last items ("sequential item-kNN").

Exactly the model of ``shared/tools/cooccurrence_reference.py`` in its per-event mode (``--batch-seconds 0``),
as a :class:`~adapters.evaluation.prequential.StreamModel`: no training, it learns every event (history included, any
rating) as it passes:

* when user u meets item i, ``C[j, i] += 1`` and ``C[i, j] += 1`` for every item j among u's last ``window``
  items (repeats count; ``C[i, i]`` gets 2 when i is among them), then ``count[i] += 1``;
* ``score(i) = Σ_j w_j C[j, i] / (count(i) + 1) ** alpha`` over u's last ``window`` items j, the newest with
  weight 1, the one before ``decay``, then ``decay²``…; all zero for a user without items.

Inside :meth:`Cooccurrence.step` every event is scored with the state from before it, then learned (per event,
like River), so the protocol's micro-batching does not change its figures. Scores are computed in float32 with
the reference's own expressions, so ties and ranks agree with it exactly. ``C`` is a dense float32 matrix up to
``dense_limit`` item columns, per-row sparse arrays above (same numbers). Ratings: none (no rating model).

Example
-------
>>> from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
>>> s = EventStream.from_arrays(users=list("aabbc"), items=list("xyxyz"), ratings=[5] * 5, history=0.6)
>>> m = Cooccurrence(s)
>>> m.learn(0, 3)                                  # a: x then y (C[x, y] = C[y, x] = 1); b: x
>>> m.score(int(s.users[3])).astype(float).round(4).tolist()   # b's last item x: y scores 1 / (1 + 1) ** 0.5
[0.0, 0.7071, 0.0]
>>> res = run_protocol(s, [Cooccurrence(s)], PrequentialConfig(history=0.6), progress=False)
>>> res.summary()["cooccurrence"]["hr@10"]         # b:y ranks first; c:z was never seen before: a miss
0.5
"""
from __future__ import annotations

import logging

import numpy as np

from adapters.errors import MetarecError
from adapters.evaluation.prequential import EventStream, Scores

log = logging.getLogger(__name__)

DENSE_LIMIT = 20_000  #: above this many item columns, ``C`` is stored as sparse rows (a dense one would be ≥ 1.6 GB)


class DenseCounts:
    """Co-occurrence counts as a dense float32 ``[n, n]`` matrix."""

    def __init__(self, n: int) -> None:
        self.matrix = np.zeros((n, n), dtype=np.float32)

    def add(self, recent: list[int], item: int) -> None:
        """``C[j, item] += 1`` and ``C[item, j] += 1`` for every j in ``recent`` (duplicates count)."""
        np.add.at(self.matrix, (recent, item), 1.0)
        np.add.at(self.matrix, (item, recent), 1.0)

    def rows(self, recent: list[int]) -> np.ndarray:
        """float32 ``[len(recent), n]``: the rows ``C[j]`` of ``recent``, in order."""
        return self.matrix[recent]


class SparseCounts:
    """Co-occurrence counts as one growable (columns, values) array pair per row, for large catalogs.

    >>> c = SparseCounts(3)
    >>> c.add([0, 0], 2)
    >>> c.rows([0, 2]).tolist()
    [[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]]
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.slots: list[dict[int, int]] = [{} for _ in range(n)]  # row -> {column: slot}
        self.cols: list[np.ndarray] = [np.zeros(0, np.int64)] * n
        self.vals: list[np.ndarray] = [np.zeros(0, np.float32)] * n

    def _bump(self, row: int, col: int) -> None:
        slots = self.slots[row]
        k = slots.get(col)
        if k is None:
            k = slots[col] = len(slots)
            if k == len(self.cols[row]):  # grow by doubling
                size = max(8, 2 * k)
                self.cols[row] = np.concatenate([self.cols[row], np.zeros(size - k, np.int64)])
                self.vals[row] = np.concatenate([self.vals[row], np.zeros(size - k, np.float32)])
            self.cols[row][k] = col
        self.vals[row][k] += 1.0

    def add(self, recent: list[int], item: int) -> None:
        """``C[j, item] += 1`` and ``C[item, j] += 1`` for every j in ``recent`` (duplicates count)."""
        for j in recent:
            self._bump(j, item)
            self._bump(item, j)

    def rows(self, recent: list[int]) -> np.ndarray:
        """float32 ``[len(recent), n]``: the rows ``C[j]`` of ``recent``, in order, densified."""
        out = np.zeros((len(recent), self.n), dtype=np.float32)
        for a, j in enumerate(recent):
            m = len(self.slots[j])
            out[a, self.cols[j][:m]] = self.vals[j][:m]
        return out


class Cooccurrence:
    """Online item-item co-occurrence over the user's last ``window`` items, learned per event.

    Parameters
    ----------
    stream : EventStream
        The stream; its item columns index ``C``.
    window : int
        How many of the user's last items (any rating) score and learn.
    decay : float
        Weight ratio between consecutive window items (newest weight 1).
    alpha : float
        Popularity damping: scores are divided by ``(count + 1) ** alpha``.
    name : str
        Model name in the report.
    dense_limit : int
        Largest catalog stored as a dense matrix (above it: :class:`SparseCounts`).
    """

    def __init__(self, stream: EventStream, window: int = 10, decay: float = 0.8, alpha: float = 0.5,
                 name: str = "cooccurrence", dense_limit: int = DENSE_LIMIT) -> None:
        if window < 1:
            raise MetarecError(f"co-occurrence window must be ≥ 1 item, got {window}")
        self.stream = stream
        self.name = name
        self.window = int(window)
        self.alpha = float(alpha)  # a Python float: numpy keeps the float32 arithmetic of the reference
        n = stream.n_cols
        self.counts: DenseCounts | SparseCounts = DenseCounts(n) if n <= dense_limit else SparseCounts(n)
        self.count = np.zeros(n, dtype=np.float32)
        self.weights = float(decay) ** np.arange(self.window - 1, -1, -1, dtype=np.float32)  # oldest .. newest
        self.recent: list[list[int]] = [[] for _ in range(stream.n_users)]
        self.next_pos = 0
        log.info("%s: %d item columns, %s counts", name, n, type(self.counts).__name__)

    def _check(self, lo: int) -> None:
        if lo != self.next_pos:
            raise MetarecError(f"{self.name}: events must be learned in order (expected {self.next_pos}, got {lo})")

    def _learn_one(self, user: int, item: int) -> None:
        recent = self.recent[user]
        if recent:
            self.counts.add(recent, item)
        recent.append(item)
        if len(recent) > self.window:
            del recent[0]
        self.count[item] += 1.0

    def score(self, user: int) -> np.ndarray:
        """float32 ``[n_cols]`` scores of every item column for ``user`` in the current state."""
        recent = self.recent[user]
        if recent:
            raw = (self.weights[-len(recent):, None] * self.counts.rows(recent)).sum(0)
        else:
            raw = np.zeros(self.stream.n_cols, dtype=np.float32)
        return raw / np.power(self.count + 1.0, self.alpha)

    def learn(self, lo: int, hi: int) -> None:
        """Learn events ``[lo, hi)`` in order."""
        self._check(lo)
        s = self.stream
        for u, i in zip(s.users[lo:hi].tolist(), s.items[lo:hi].tolist()):
            self._learn_one(u, i)
        self.next_pos = hi

    def step(self, lo: int, hi: int, rank_rows: np.ndarray) -> Scores:
        """Score each event of ``[lo, hi)`` with the state before it (rows ``rank_rows`` only), then learn it."""
        self._check(lo)
        s = self.stream
        ranking = np.empty((len(rank_rows), s.n_cols), dtype=np.float32)
        want = np.full(hi - lo, -1, dtype=np.int64)
        want[rank_rows] = np.arange(len(rank_rows))
        for u, i, w in zip(s.users[lo:hi].tolist(), s.items[lo:hi].tolist(), want.tolist()):
            if w >= 0:
                ranking[w] = self.score(u)
            self._learn_one(u, i)
        self.next_pos = hi
        return Scores(ratings=None, ranking=ranking)

"""The demo's live scoreboard: the worker, popularity and θ0 alone, scored on the same live events.

Three models are asked the same question for every *scored* live event e of user U (a positive event — rating
≥ 4 or implicit — of a user who had an earlier event): does the list U was shown before e contain e's item?

* ``metarec`` — the real worker: the latest list published on ``recommendations`` for U whose ``as_of`` offset is
  below e's offset (the list the worker had produced without e; under micro-batches, U's earlier events of the same
  batch are not in it either, as a live consumer sees it). Read from the topic by :class:`WorkerLists`.
* ``popularity`` — all-time counts over every event replayed so far (backfill included), the user's seen items
  excluded, same k, learning after every event (it favours popularity).
* ``no_adaptation`` — the same checkpoint in an :class:`~adapters.online.learner.OnlineLearner` with zero inner
  steps (θ0's user part, never adapted; the item side learns online, as in ``metarec evaluate``), run in the demo
  process on the same events, in the live micro-batches the demo sends.

An event with no list for U yet counts as a miss for that model. Pure Python + numpy + the learner: no Kafka here.

Example
-------
>>> pop = Popularity(k=2)
>>> for user, item in [("a", "x"), ("b", "x"), ("b", "y"), ("c", "z")]:
...     pop.learn(user, item)
>>> pop.top("a"), pop.top("d")
(['y', 'z'], ['x', 'y'])
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from adapters.meta.checkpoint import Checkpoint
    from adapters.online.learner import Interaction
    from adapters.online.records import UserRecord

MODELS = ("metarec", "no_adaptation", "popularity")  #: report order


def is_positive(rating: float | None) -> bool:
    """Scored like the prequential HR@K: explicit rating ≥ 4, or implicit (None / NaN)."""
    return rating is None or math.isnan(rating) or rating >= 4.0


class Popularity:
    """All-time event counts; the top ``k`` items a user has not interacted with (ties: first seen first)."""

    def __init__(self, k: int = 10) -> None:
        self.k = k
        self._row: dict[str, int] = {}
        self._names: list[str] = []
        self._counts = np.zeros(1024, dtype=np.int64)
        self._seen: dict[str, set[int]] = {}

    def _index(self, item: str) -> int:
        row = self._row.get(item)
        if row is None:
            row = self._row[item] = len(self._names)
            self._names.append(item)
            if row >= len(self._counts):
                self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
        return row

    def learn(self, user: str, item: str) -> None:
        row = self._index(item)
        self._counts[row] += 1
        self._seen.setdefault(user, set()).add(row)

    def learn_many(self, users: np.ndarray, items: np.ndarray) -> None:
        """:meth:`learn` for many events at once (the backfill)."""
        rows = np.array([self._index(str(i)) for i in items], dtype=np.int64)
        self._counts[: len(self._names)] += np.bincount(rows, minlength=len(self._names))
        for user, row in zip(users.tolist(), rows.tolist()):
            self._seen.setdefault(str(user), set()).add(row)

    def top(self, user: str) -> list[str]:
        n = len(self._names)
        order = np.argsort(-self._counts[:n], kind="stable")
        seen = self._seen.get(user, ())
        return [self._names[r] for r in order[: self.k + len(seen)].tolist() if r not in seen][: self.k]


class ThetaZero:
    """The checkpoint with zero inner steps (``no_adaptation``): every list it made per user, by the live sequence
    number of the newest event of that user it had taken into account (-1: a backfill event)."""

    def __init__(self, checkpoint: Checkpoint, top_k: int = 10) -> None:
        from adapters.online.learner import OnlineConfig, OnlineLearner

        self.learner = OnlineLearner(checkpoint, OnlineConfig(steps=0, top_k=top_k))
        self.records: dict[str, UserRecord] = {}
        self.history: dict[str, list[tuple[int, frozenset[str]]]] = {}

    def learn(self, events: list[Interaction]) -> None:
        """One micro-batch of :class:`~adapters.online.learner.Interaction` values whose ``offset`` is the live
        sequence number (-1 in the backfill); refreshes the touched users' lists."""
        if not events:
            return
        result = self.learner.process(events, self.records, measure_loss=False)
        self.records.update(result.records)
        for rec in result.recommendations:
            lists = self.history.setdefault(rec.user_id, [])
            if lists and lists[-1][0] < 0:
                lists.pop()  # of the backfill, only the last list matters
            lists.append((int(rec.offset), frozenset(rec.items)))

    def latest(self, user: str) -> frozenset[str] | None:
        lists = self.history.get(user)
        return lists[-1][1] if lists else None

    def as_of(self, user: str, seq: int) -> frozenset[str] | None:
        """The newest list of ``user`` that took into account no live event after sequence number ``seq``."""
        earlier = [items for s, items in self.history.get(user, ()) if s <= seq]
        return earlier[-1] if earlier else None


class WorkerLists:
    """Every list the worker published, per user, in ``as_of`` order (thread-safe: a reader thread appends)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lists: dict[str, list[tuple[int, frozenset[str]]]] = {}
        self.latest: dict[str, dict[str, Any]] = {}  #: user → the newest list's message value
        self.counts: dict[str, int] = {}  #: user → lists published
        self.received = 0

    def add(self, value: dict[str, Any]) -> None:
        user = value["user_id"]
        with self._lock:
            self._lists.setdefault(user, []).append((int(value["as_of"]["offset"]), frozenset(value["items"])))
            self.latest[user] = value
            self.counts[user] = self.counts.get(user, 0) + 1
            self.received += 1

    def before(self, user: str, offset: int, final: bool = False) -> tuple[bool, tuple[int, frozenset[str]] | None]:
        """``(resolved, (as_of offset, list))``: the newest list of ``user`` with ``as_of`` below ``offset`` (None:
        there is none). Resolved once a list that includes the event (``as_of`` ≥ ``offset``) arrived, or when
        ``final``."""
        with self._lock:
            lists = self._lists.get(user, [])
            resolved = final or any(o >= offset for o, _ in reversed(lists))
            if not resolved:
                return False, None
            earlier = [entry for entry in lists if entry[0] < offset]
            return True, (earlier[-1] if earlier else None)


@dataclass
class LiveEvent:
    """One live event and, when scored, each model's outcome (None: not known yet)."""

    user: str
    item: str
    rating: float
    timestamp: float
    seq: int = -1  #: position in the live phase
    scored: bool = False
    partition: int = -1
    offset: int = -1  #: its input offset, known once delivered
    outcome: dict[str, bool | None] = field(default_factory=dict)


class Scoreboard:
    """Scores the live events for the three models; thread-safe (the feeder writes, the view reads).

    ``no_adaptation`` is scored with the same information as the worker: its list as of the event the worker's list
    was as of (θ0 runs on finer micro-batches than the worker, so it has one). Its own, fresher lists are scored
    too, as ``no_adaptation_own_pace`` (what the worker's micro-batching and latency cost, not a model difference).
    """

    def __init__(self, theta0: ThetaZero, top_k: int = 10) -> None:
        self.popularity = Popularity(top_k)
        self.theta0 = theta0
        self.users: set[str] = set()
        self.events: list[LiveEvent] = []
        self._lock = threading.Lock()
        self._unresolved: list[LiveEvent] = []
        self._seq_of: dict[tuple[str, int], int] = {}  #: (user, input offset) → live sequence number
        self._mapped = 0  #: live events whose offset is in _seq_of (delivery is in order)

    def learn_backfill(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, timestamps: np.ndarray,
                       batch: int = 1000) -> None:
        """What every model has learned before the live phase: the backfill events (θ0 in ``batch``-event steps)."""
        from adapters.online.learner import Interaction

        self.popularity.learn_many(users, items)
        self.users.update(map(str, users.tolist()))
        for lo in range(0, len(users), batch):
            hi = min(lo + batch, len(users))
            self.theta0.learn([Interaction(str(u), str(i), float(r), float(t)) for u, i, r, t in
                               zip(users[lo:hi], items[lo:hi], ratings[lo:hi], timestamps[lo:hi])])

    def score_and_learn(self, events: list[LiveEvent]) -> None:
        """Score a micro-batch of live events for popularity (per event) and θ0 at its own pace, then let both
        learn it. The worker's outcome and θ0's at the worker's information come later, from :meth:`resolve`."""
        from adapters.online.learner import Interaction

        for ev in events:
            ev.scored = is_positive(ev.rating) and ev.user in self.users
            if ev.scored:
                ev.outcome["popularity"] = ev.item in self.popularity.top(ev.user)
                ev.outcome["no_adaptation_own_pace"] = ev.item in (self.theta0.latest(ev.user) or ())
            self.popularity.learn(ev.user, ev.item)
            self.users.add(ev.user)
        self.theta0.learn([Interaction(ev.user, ev.item, ev.rating, ev.timestamp, 0, ev.seq) for ev in events])
        with self._lock:
            self.events.extend(events)
            self._unresolved.extend(ev for ev in events if ev.scored)

    def resolve(self, worker: WorkerLists, final: bool = False) -> int:
        """Fill in the outcomes that depend on the worker's lists for every delivered scored event the worker has
        answered (``final``: for all, with the lists received); returns the number still open."""
        with self._lock:
            while self._mapped < len(self.events) and self.events[self._mapped].offset >= 0:
                ev = self.events[self._mapped]
                self._seq_of[(ev.user, ev.offset)] = ev.seq
                self._mapped += 1
            still = []
            for ev in self._unresolved:
                done, listed = worker.before(ev.user, ev.offset, final) if ev.offset >= 0 else (final, None)
                if not done:
                    still.append(ev)
                    continue
                ev.outcome["metarec"] = listed is not None and ev.item in listed[1]
                seq = None if listed is None else self._seq_of.get((ev.user, listed[0]), -1)
                same_info = None if seq is None else self.theta0.as_of(ev.user, seq)
                ev.outcome["no_adaptation"] = same_info is not None and ev.item in same_info
            self._unresolved = still
            return len(still)

    def _done(self) -> list[dict[str, bool | None]]:
        with self._lock:
            return [ev.outcome for ev in self.events if ev.scored and ev.outcome.get("metarec") is not None]

    def rates(self, names: tuple[str, ...] = MODELS) -> dict[str, dict[str, float]]:
        """Hit rate of each model over the scored events whose outcomes are all known."""
        done = self._done()
        out = {}
        for name in names:
            hits = sum(bool(o[name]) for o in done)
            out[name] = {"hit_rate": hits / len(done) if done else math.nan, "hits": hits, "events": len(done)}
        return out

    def paired(self, a: str, b: str) -> dict[str, int]:
        """On the resolved scored events: how many only ``a`` hit and how many only ``b`` did (the events that
        decide between them, e.g. for McNemar's test)."""
        done = self._done()
        return {f"{a}_only": sum(bool(o[a]) and not o[b] for o in done),
                f"{b}_only": sum(bool(o[b]) and not o[a] for o in done)}

    def outcomes(self) -> dict[str, np.ndarray]:
        """Per model, the 0/1 outcomes of the resolved scored events in live order (for the rolling plot)."""
        done = self._done()
        return {name: np.array([bool(o[name]) for o in done], dtype=np.float64) for name in MODELS}

"""A deliberately naive, per-event implementation of the contract's prequential figures: the tests' oracle.

What it is for
--------------
The equivalence tests of ``adapters.evaluation`` (``tests/adapters/evaluation/test_prequential.py`` and
``test_cooccurrence.py``) compare the project's vectorised, micro-batched figures with this module. It computes
what the contract's reference tools compute (``../shared/tools/prequential_reference.py`` and
``../shared/tools/cooccurrence_reference.py``, outside the repository), so a clone without ``../shared`` still
checks the project against an independent implementation; where the tools exist, a test pins this module to them.

It is written from the contract ("Prequential protocol" in ``CONTRACT.md``) and the definitions of the reference
tools, and imports nothing of the project. Everything is plain Python, one event at a time, with dicts keyed by
the original user and item ids; clarity over speed (it is meant for streams of a few thousand events).

The protocol (as the contract defines it)
-----------------------------------------
* Events sorted by timestamp, stable (ties keep file order). The first ``int(len(events) * history)`` events are
  history: learned, not scored. Every later event is scored before it is learned from.
* An event is *positive* when its rating is ≥ 4 or it is implicit (no rating). Ranking figures are over the
  scored positive events.
* Candidates of an event: every item seen in an earlier event (history included) minus the items this user
  interacted with in earlier events. The event's item is a miss (rank ``inf``) when it was never seen before or
  the user already had it.
* rank = (#candidates scored strictly higher) + (#other candidates scored equal) / 2, so a constant scorer gets
  rank (#candidates - 1) / 2. ``hr@k`` = share of ranks < k; ``ndcg@k`` = Σ 1 / log2(rank + 2) over those hits,
  divided by the number of scored positive events.

The models
----------
* :func:`popularity` -- item interaction counts; with ``half_life`` (in events) every count is multiplied by
  ``0.5 ** (1 / half_life)`` at every event (history included) before the event's item gets its ``+1``, as the
  reference does.
* :func:`cooccurrence` -- online item-item co-occurrence over each user's last ``window`` items (any rating):
  when a user meets item i, ``C[j][i] += 1`` and ``C[i][j] += 1`` for every item j among the user's last
  ``window`` items (repeats count), then ``count[i] += 1``; the score of item c for a user is
  Σ ``decay ** age(j) * C[j][c]`` over the user's last ``window`` items j (age 0 = newest), divided by
  ``(count[c] + 1) ** alpha``. With ``batch_seconds`` S > 0, the model state only moves at micro-batch ends
  (a batch ends before the first event S or more seconds after its first event, or at the history boundary);
  candidates and exclusions still follow event positions.
* :func:`river_biasedmf` -- ``rmse``/``mae`` of River's ``reco.BiasedMF`` with the reference's hyper-parameters,
  predicted then learned event by event (River itself is the model; only the protocol loop is ours).

The reference computes the co-occurrence scores in float32, and float32 decides some ties that float64 would break;
so that the figures agree exactly, :func:`cooccurrence` rounds to float32 where the reference does: each
product ``weight * C[j][c]``, each partial sum (oldest window item first), the quotient. Its two powers -- the
decay weights ``decay ** age`` and the damping ``(count + 1) ** alpha`` -- are taken from numpy's float32
``power`` over an array, as the reference takes them: libm's ``powf`` (and numpy on a 0-d scalar) differ from it
in the last bit for some inputs.

API
---
``Event``, :func:`read_events` (a contract CSV/TSV file, sorted), :func:`sort_events`, :func:`contract_rank`,
:class:`RankingFigures` (ranks → ``hr@k``, ``ndcg@k``), :func:`popularity`, :func:`cooccurrence`,
:class:`RatingFigures`, :func:`river_biasedmf`.
"""
from __future__ import annotations

import csv
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POSITIVE_RATING = 4.0  #: explicit ratings ≥ this are positive events (implicit events are positive too)


@dataclass(frozen=True)
class Event:
    """One interaction: ``rating`` None is an implicit event."""

    user: str
    item: str
    rating: float | None
    timestamp: float

    @property
    def positive(self) -> bool:
        return self.rating is None or self.rating >= POSITIVE_RATING


def sort_events(events: Iterable[Event]) -> list[Event]:
    """The events in stream order: by timestamp, ties in their given order (Python's sort is stable)."""
    return sorted(events, key=lambda e: e.timestamp)


def read_events(path: str | Path) -> list[Event]:
    """A contract CSV/TSV file (header naming ``user_id,item_id,rating,timestamp``; empty rating = implicit),
    in stream order. The delimiter is a tab when the header has one, else a comma."""
    with open(path, newline="", encoding="utf-8") as f:
        header = f.readline()
        f.seek(0)
        rows = csv.DictReader(f, delimiter="\t" if "\t" in header else ",")
        events = [Event(user=row["user_id"], item=row["item_id"],
                        rating=float(row["rating"]) if row["rating"].strip() else None,
                        timestamp=float(row["timestamp"]))
                  for row in rows]
    return sort_events(events)


def history_end(events: Sequence[Event], history: float) -> int:
    """Position of the first scored event."""
    return int(len(events) * history)


def contract_rank(scores: Mapping[str, float], target: str, candidates: Iterable[str]) -> float:
    """The contract's rank of ``target`` among ``candidates`` (which include it).

    ``scores`` maps every candidate to its score. Every other candidate scored strictly higher counts 1, every
    other candidate scored equal counts 1/2.
    """
    mine = scores[target]
    higher = 0
    ties = 0
    for item in candidates:
        if item == target:
            continue
        if scores[item] > mine:
            higher += 1
        elif scores[item] == mine:
            ties += 1
    return higher + ties / 2


@dataclass(frozen=True)
class RankingFigures:
    """The ranks of the scored positive events (stream order; ``inf`` = miss) and the figures they give."""

    ranks: list[float]
    k: int = 10

    @property
    def positives(self) -> int:
        return len(self.ranks)

    @property
    def hr(self) -> float:
        """``hr@k``: share of scored positive events ranked < k."""
        hits = 0
        for rank in self.ranks:
            if rank < self.k:
                hits += 1
        return hits / len(self.ranks)

    @property
    def ndcg(self) -> float:
        """``ndcg@k``: Σ 1 / log2(rank + 2) over the hits, divided by the number of scored positive events."""
        total = 0.0
        for rank in self.ranks:
            if rank < self.k:
                total += 1.0 / math.log2(rank + 2)
        return total / len(self.ranks)

    def as_dict(self) -> dict[str, float]:
        """``{"hr@k", "ndcg@k", "positives"}``: the keys of the reference tools' output."""
        return {f"hr@{self.k}": self.hr, f"ndcg@{self.k}": self.ndcg, "positives": self.positives}


class Exposure:
    """What the protocol knows before an event: the items seen so far (in order of first appearance) and the
    items each user interacted with."""

    def __init__(self) -> None:
        self.seen: dict[str, None] = {}  # an ordered set
        self.user_items: dict[str, set[str]] = {}

    def is_miss(self, event: Event) -> bool:
        """The event's item can't be ranked: never seen before, or the user already had it."""
        return event.item not in self.seen or event.item in self.user_items.get(event.user, set())

    def candidates(self, user: str) -> list[str]:
        """Every item seen so far minus the user's own."""
        mine = self.user_items.get(user, set())
        return [item for item in self.seen if item not in mine]

    def record(self, event: Event) -> None:
        self.seen[event.item] = None
        self.user_items.setdefault(event.user, set()).add(event.item)


# ----------------------------------------------------------------------------------------------- popularity
def popularity(events: Sequence[Event], history: float = 0.5, half_life: float | None = None,
               k: int = 10) -> RankingFigures:
    """Popularity ranking, all-time (``half_life`` None) or decayed by half every ``half_life`` events.

    Parameters
    ----------
    events : sequence of Event
        In stream order (:func:`sort_events`).
    history : float
        Leading fraction of the events that is history.
    half_life : float, optional
        Half-life of a count, in events.
    k : int
        Cut-off of ``hr@k`` / ``ndcg@k``.
    """
    start = history_end(events, history)
    factor = 1.0 if half_life is None else 0.5 ** (1.0 / half_life)
    counts: dict[str, float] = {}
    exposure = Exposure()
    ranks: list[float] = []
    for n, event in enumerate(events):
        # score, before learning
        if n >= start and event.positive:
            if exposure.is_miss(event):
                ranks.append(math.inf)
            else:
                ranks.append(contract_rank(counts, event.item, exposure.candidates(event.user)))
        # learn
        if half_life is not None:
            for item in counts:
                counts[item] *= factor
        counts[event.item] = counts.get(event.item, 0.0) + 1.0
        exposure.record(event)
    return RankingFigures(ranks, k)


# --------------------------------------------------------------------------------------------- co-occurrence
_FLOAT32 = struct.Struct("f")


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32, as a Python float (exact: a float32 fits a float64)."""
    return _FLOAT32.unpack(_FLOAT32.pack(x))[0]


class CooccurrenceModel:
    """The online item-item co-occurrence model (state and scores); see the module docstring.

    ``max_count`` bounds the item counts the damping table covers (the number of events learned is enough).
    """

    def __init__(self, window: int = 10, decay: float = 0.8, alpha: float = 0.5, max_count: int = 1) -> None:
        self.window = window
        # float32 constants, from numpy's float32 power over arrays (see the module docstring)
        self.weight_of_age = (decay ** np.arange(window, dtype=np.float32)).tolist()  # age 0 = newest: 1.0
        self.damping_of_count = np.power(np.arange(1, max_count + 2, dtype=np.float32), alpha).tolist()
        self.pairs: dict[str, dict[str, int]] = {}  # C[j][i]
        self.count: dict[str, int] = {}
        self.recent: dict[str, list[str]] = {}  # user -> every item met, oldest first

    def last_items(self, user: str) -> list[str]:
        """The user's last ``window`` items, oldest first."""
        return self.recent.get(user, [])[-self.window:]

    def learn(self, user: str, item: str) -> None:
        for other in self.last_items(user):
            row = self.pairs.setdefault(other, {})
            row[item] = row.get(item, 0) + 1
            row = self.pairs.setdefault(item, {})
            row[other] = row.get(other, 0) + 1
        self.recent.setdefault(user, []).append(item)
        self.count[item] = self.count.get(item, 0) + 1

    def scores(self, user: str, items: Iterable[str]) -> dict[str, float]:
        """The score of each of ``items`` for ``user``: Σ weight(age of j) · C[j][item] over the user's last
        items j, added oldest first, divided by ``(count[item] + 1) ** alpha``; float32 at every step. An item
        that never met one of the user's last items scores 0."""
        last = self.last_items(user)
        totals: dict[str, float] = {}
        for position, other in enumerate(last):
            weight = self.weight_of_age[len(last) - 1 - position]
            for item, together in self.pairs.get(other, {}).items():
                totals[item] = f32(totals.get(item, 0.0) + f32(weight * together))
        out: dict[str, float] = {}
        for item in items:
            total = totals.get(item, 0.0)
            out[item] = f32(total / self.damping_of_count[self.count.get(item, 0)]) if total else 0.0
        return out


def cooccurrence(events: Sequence[Event], history: float = 0.5, window: int = 10, decay: float = 0.8,
                 alpha: float = 0.5, batch_seconds: float = 0.0, k: int = 10) -> RankingFigures:
    """The co-occurrence model under the protocol, per event (``batch_seconds`` 0) or in micro-batches of
    ``batch_seconds`` seconds of event time (each event scored with the state from before its batch).

    Parameters
    ----------
    events : sequence of Event
        In stream order (:func:`sort_events`).
    history : float
        Leading fraction of the events that is history.
    window, decay, alpha : int, float, float
        The user's last items that count, the weight ratio between consecutive ones (newest 1), the popularity
        damping exponent.
    batch_seconds : float
        0: the model learns each event right after scoring it. S > 0: micro-batches of S seconds.
    k : int
        Cut-off of ``hr@k`` / ``ndcg@k``.
    """
    start = history_end(events, history)
    model = CooccurrenceModel(window, decay, alpha, max_count=len(events))
    exposure = Exposure()
    ranks: list[float] = []
    pending: list[Event] = []  # the current micro-batch, learned when it ends
    batch_began: float | None = None
    for n, event in enumerate(events):
        if batch_seconds > 0:
            new_batch = batch_began is None or event.timestamp >= batch_began + batch_seconds or n == start
            if new_batch:
                for earlier in pending:
                    model.learn(earlier.user, earlier.item)
                pending = []
                batch_began = event.timestamp
        if n >= start and event.positive:
            if exposure.is_miss(event):
                ranks.append(math.inf)
            else:
                candidates = exposure.candidates(event.user)
                scores = model.scores(event.user, candidates)
                ranks.append(contract_rank(scores, event.item, candidates))
        exposure.record(event)
        if batch_seconds > 0:
            pending.append(event)
        else:
            model.learn(event.user, event.item)
    return RankingFigures(ranks, k)


# ------------------------------------------------------------------------------------------------ River MF
@dataclass(frozen=True)
class RatingFigures:
    """``rmse``/``mae`` over the scored events."""

    rmse: float
    mae: float
    scored: int


def river_biasedmf(events: Sequence[Event], history: float = 0.5, n_factors: int = 10,
                   seed: int = 73) -> RatingFigures:
    """River ``reco.BiasedMF`` (10 factors, SGD 0.025 on biases and 0.05 on latents, zero-initialised biases,
    N(0, 0.1) latents seeded 73, no L2), each scored event predicted then learned.

    Raises
    ------
    ValueError
        An implicit event: the reference defines this model on explicit ratings only.
    """
    from river import optim, reco

    model = reco.BiasedMF(n_factors=n_factors, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
                          weight_initializer=optim.initializers.Zeros(),
                          latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
                          l2_bias=0.0, l2_latent=0.0)
    start = history_end(events, history)
    squared = 0.0
    absolute = 0.0
    scored = 0
    for n, event in enumerate(events):
        if event.rating is None:
            raise ValueError(f"event {n} is implicit: river_biasedmf needs explicit ratings")
        if n >= start:
            error = model.predict_one(event.user, event.item) - event.rating
            squared += error * error
            absolute += abs(error)
            scored += 1
        model.learn_one(event.user, event.item, event.rating)
    return RatingFigures(rmse=math.sqrt(squared / scored), mae=absolute / scored, scored=scored)

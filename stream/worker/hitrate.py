"""Live hit rate of published recommendation lists against each user's next events.

Backs the gauge ``metarec_online_hit_rate``: every time the worker publishes a top-K list for a user it calls
:meth:`OnlineHitRate.on_published`; every time an interaction arrives it calls :meth:`OnlineHitRate.on_event`
*before* that event is taken into account (i.e. before the list that includes it is published). An event is a
*hit* when its item is in the latest list published for that user, a *miss* when it is not, and not counted at
all when no list has been published for that user yet (or it was evicted). :attr:`OnlineHitRate.rate` is the share
of hits among the last ``window`` counted events -- the online counterpart of the prequential HR@K.

Pure Python, bounded memory: at most ``max_users`` lists are kept (least recently published/used evicted first)
and ``window`` outcomes. Thread-safe (one lock), so a metrics thread may read :attr:`rate` while the processing
loop writes.

Example
-------
>>> from stream.worker.hitrate import OnlineHitRate
>>> tracker = OnlineHitRate(window=100)
>>> tracker.on_event("alice", "i1") is None      # no list published for alice yet: not counted
True
>>> tracker.on_published("alice", ["i1", "i2", "i3"])
>>> tracker.on_event("alice", "i2"), tracker.on_event("alice", "i9")
(True, False)
>>> tracker.rate, tracker.counted
(0.5, 2)
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable


class OnlineHitRate:
    """Rolling hit rate of the latest published list of each user versus that user's following events.

    Parameters
    ----------
    window : int
        Number of most recent counted events the rate is computed over (default 1,000).
    max_users : int
        Most users whose latest list is remembered; the least recently touched one is evicted (default 100,000).
    positive_threshold : float | None
        Events with an explicit rating below this are ignored (not counted), mirroring the prequential HR@K
        which only scores positive events (rating >= 4). ``None`` counts every event. Implicit events
        (rating ``None``) always count.
    """

    def __init__(self, window: int = 1_000, max_users: int = 100_000,
                 positive_threshold: float | None = 4.0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        self.window = int(window)
        self.max_users = int(max_users)
        self.positive_threshold = positive_threshold
        self._lists: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._outcomes: deque[bool] = deque(maxlen=self.window)
        self._hits_in_window = 0
        self._total_hits = 0
        self._total_counted = 0
        self._lock = threading.Lock()

    def on_published(self, user_id: str, items: Iterable[str]) -> None:
        """Remember ``items`` as the list the user is now being shown (replaces the previous one)."""
        listed = frozenset(items)
        with self._lock:
            self._lists[user_id] = listed
            self._lists.move_to_end(user_id)
            while len(self._lists) > self.max_users:
                self._lists.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop the list remembered for ``user_id`` (the user was forgotten)."""
        with self._lock:
            self._lists.pop(user_id, None)

    def on_event(self, user_id: str, item_id: str, rating: float | None = None) -> bool | None:
        """Score one incoming event against the user's latest list.

        Returns True (hit), False (miss), or None when the event is not counted (no list for this user,
        or an explicit rating below ``positive_threshold``).
        """
        explicit = rating is not None and not math.isnan(rating)  # None / NaN = implicit positive
        if explicit and self.positive_threshold is not None and rating < self.positive_threshold:
            return None  # negative explicit feedback is not a missed recommendation
        with self._lock:
            listed = self._lists.get(user_id)
            if listed is None:
                return None
            self._lists.move_to_end(user_id)
            hit = item_id in listed
            if len(self._outcomes) == self.window and self._outcomes[0]:
                self._hits_in_window -= 1
            self._outcomes.append(hit)
            self._hits_in_window += hit
            self._total_hits += hit
            self._total_counted += 1
            return hit

    @property
    def rate(self) -> float:
        """Share of hits among the last ``window`` counted events (0.0 before any counted event)."""
        with self._lock:
            n = len(self._outcomes)
            return self._hits_in_window / n if n else 0.0

    @property
    def counted(self) -> int:
        """Number of counted events in the current window."""
        return len(self._outcomes)

    @property
    def total_rate(self) -> float:
        """Share of hits over every counted event since start (0.0 before any)."""
        with self._lock:
            return self._total_hits / self._total_counted if self._total_counted else 0.0

    @property
    def users_tracked(self) -> int:
        """Number of users whose latest list is currently remembered."""
        return len(self._lists)

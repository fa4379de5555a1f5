"""Model roll-out state of one worker: which version it serves, since when, and whether the next one is stuck.

Backs three metrics (:mod:`stream.worker.metrics`):

* ``metarec_model_load_failures_total{reason}`` -- one increment per *distinct* failure, a failure being a
  (candidate version, reason) pair, not one per poll: a corrupt version named by ``LATEST`` for an hour counts
  once. A roll-out that settles (the worker serves what ``--checkpoint`` designates) starts a new episode: the
  same failure later counts again. The reasons are a closed set, :data:`REASONS`:

  ``missing``
      ``LATEST`` (or ``--checkpoint``) names no checkpoint directory, or one of its files is absent (a version
      copied file by file and not complete yet);
  ``corrupt``
      a file is there but unreadable: ``LATEST`` not UTF-8, JSON that does not parse, weights that are not a
      valid safetensors file (or a pickle), a malformed vocabulary;
  ``incompatible``
      the files are sound but this worker cannot serve them: another checkpoint format, weights that do not match
      the configuration, or the online learner refused the switch;
  ``other``
      anything else (a bug: the log line has the exception).

* ``metarec_model_rollout_failing`` -- 1 while the version ``--checkpoint`` designates cannot be served (the
  worker keeps serving the previous one), 0 once it serves the designated version. The alert
  ``MetarecModelRolloutFailing`` fires when it stays 1 for 5 minutes.
* ``metarec_model_version_age_seconds`` -- now minus the write time of the served version's checkpoint (the newest
  modification time of its directory and files, as the watcher saw it when it loaded the version); a restart
  does not reset it. When that time is unknown (a checkpoint given in memory), the time the worker began to
  serve it. NaN before a version is served.

Each distinct failure is logged once (a warning); the recovery once (info).

Example
-------
>>> r = ModelRollout()
>>> r.served("v1")
>>> r.failed("v2", "corrupt", "weights are not a valid safetensors file"), r.failed("v2", "corrupt", "same")
(True, False)
>>> r.failing, r.failures["corrupt"]
(True, 1)
>>> r.served("v3"); r.failing
False
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from adapters.errors import MetarecError

log = logging.getLogger(__name__)

MISSING, CORRUPT, INCOMPATIBLE, OTHER = "missing", "corrupt", "incompatible", "other"
#: the closed set of ``reason`` label values of ``metarec_model_load_failures_total``
REASONS = (MISSING, CORRUPT, INCOMPATIBLE, OTHER)

#: what :meth:`adapters.meta.checkpoint.Checkpoint.load` says → reason (first match wins; pinned by
#: tests/stream/worker/test_rollout.py against the real loader, so a reworded message shows up there)
_LOAD_MESSAGES = (
    ("does not exist", MISSING),
    ("is not a metarec checkpoint (missing", MISSING),
    ("unsupported format", INCOMPATIBLE),
    ("do not match its configuration", INCOMPATIBLE),
    ("unreadable JSON", CORRUPT),
    ("cannot read", CORRUPT),
    ("pickle", CORRUPT),
    ("not a valid safetensors", CORRUPT),
    ("malformed vocabulary", CORRUPT),
    ("item ids for", CORRUPT),
    ("vocabulary must start", CORRUPT),
)
_EPISODE_KEYS = 1_000  #: distinct failures remembered per episode (bounded memory under a flapping LATEST)


class RolloutError(MetarecError):
    """A candidate version that cannot be served, with its :data:`REASONS` ``reason`` and ``candidate`` name."""

    def __init__(self, message: str, reason: str, candidate: str) -> None:
        super().__init__(message)
        self.reason, self.candidate = reason, candidate


def classify(exc: BaseException) -> str:
    """The :data:`REASONS` value of an exception raised while loading or switching to a checkpoint.

    >>> classify(MetarecError("checkpoint /m/v2: unreadable JSON (Expecting value)"))
    'corrupt'
    >>> classify(FileNotFoundError("weights.safetensors")), classify(KeyError("x"))
    ('missing', 'other')
    """
    if isinstance(exc, RolloutError):
        return exc.reason
    if isinstance(exc, MetarecError):
        text = str(exc)
        return next((reason for fragment, reason in _LOAD_MESSAGES if fragment in text), OTHER)
    if isinstance(exc, FileNotFoundError):
        return MISSING
    if isinstance(exc, (OSError, UnicodeDecodeError, ValueError)):
        return CORRUPT
    return OTHER


class ModelRollout:
    """The served version, its write time, and the current episode of failures (thread-safe).

    Parameters
    ----------
    failures, failing, age
        The Prometheus counter (labelled ``reason``), the 0/1 gauge and the age gauge to keep up to date; None
        keeps the state only (tests, tools).
    clock
        Wall clock in epoch seconds (injectable for tests).
    """

    def __init__(self, failures: Any = None, failing: Any = None, age: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._failures_metric, self._failing_metric = failures, failing
        self.clock = clock
        self.version: str | None = None  #: the version served (None before the first)
        self.failures = {reason: 0 for reason in REASONS}  #: distinct failures so far, by reason
        self.failing = False
        self._since: float | None = None  #: write time of the served version (epoch s)
        self._written: dict[str, float] = {}  #: version → write time of the loaded candidates
        self._episode: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        for reason in REASONS:  # every series exists from the start (value 0)
            if failures is not None:
                failures.labels(reason)
        if failing is not None:
            failing.set(0)
        if age is not None:
            age.set_function(self.age)

    def loaded(self, version: str, written_at: float) -> None:
        """A candidate ``version`` was read from disk; ``written_at`` is its checkpoint's write time (epoch s)."""
        with self._lock:
            self._written[version] = float(written_at)
            while len(self._written) > 16:
                self._written.pop(next(iter(self._written)))

    def served(self, version: str) -> None:
        """The worker now serves ``version``: the age restarts from its write time, the roll-out is settled."""
        with self._lock:
            if version != self.version or self._since is None:
                self._since = self._written.get(version, self.clock())
            self.version = version
        self.settled()

    def failed(self, candidate: str, reason: str, detail: str) -> bool:
        """Record that ``candidate`` cannot be served; True (logged and counted) when it is a new distinct failure."""
        if reason not in REASONS:
            reason = OTHER
        with self._lock:
            self.failing = True
            key = (candidate, reason)
            new = key not in self._episode
            if new:
                if len(self._episode) >= _EPISODE_KEYS:
                    self._episode.clear()
                self._episode.add(key)
                self.failures[reason] += 1
        if self._failing_metric is not None:
            self._failing_metric.set(1)
        if new:
            if self._failures_metric is not None:
                self._failures_metric.labels(reason).inc()
            log.warning("model roll-out: cannot serve %s (%s: %s); still serving %s (logged once; retried when it changes)",
                        candidate, reason, detail, self.version)
        return new

    def settled(self) -> None:
        """What ``--checkpoint`` designates is what is served: the failure episode (if any) is over."""
        with self._lock:
            was, self.failing = self.failing, False
            self._episode.clear()
        if self._failing_metric is not None:
            self._failing_metric.set(0)
        if was:
            log.info("model roll-out: settled, serving %s", self.version)

    def age(self) -> float:
        """Seconds since the served version's checkpoint was written (NaN before a version is served)."""
        since = self._since
        return math.nan if since is None else max(0.0, self.clock() - since)

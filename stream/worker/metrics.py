"""The worker's Prometheus metrics (one registry per worker) and the small trackers behind its gauges.

Every name below is part of the outside contract (dashboard, alerts): base units (seconds), no per-user labels.

=========================================  =========  ==============================================================
metric                                     type       meaning
=========================================  =========  ==============================================================
``metarec_events_consumed_total``          counter    input messages read (valid and invalid)
``metarec_events_invalid_total{reason}``   counter    input messages sent to the dead-letter topic, by reason
``metarec_recommendations_published_total`` counter   top-K lists published
``metarec_adaptation_seconds``             histogram  time of the one batched adaptation call of a micro-batch
``metarec_event_to_publish_seconds``       histogram  per event: Kafka record timestamp → its user's list published
``metarec_consumer_lag{topic,partition}``  gauge      high watermark − next offset to process (Tansu: reads low)
``metarec_users_active``                   gauge      distinct users with an event in the last ``active_window_s``
``metarec_adaptation_loss``                gauge      mean pre-update loss on the incoming events of the last batch
``metarec_model_info{version,model,meta}`` gauge      1 for the model being served
``metarec_online_hit_rate``                gauge      rolling share of events whose item was in the user's last list
``metarec_unknown_items_total``            counter    events whose item had no row yet (a new item: it gets one)
``metarec_items_total``                    gauge      item rows the worker can recommend, new items included
``metarec_item_state_lag_seconds``         gauge      age of the newest shared item update this worker has applied
``metarec_batches_total``                  counter    micro-batches processed
``metarec_model_switches_total``           counter    model versions switched to without restart
``metarec_model_load_failures_total``      counter    distinct failures to serve the designated version, by
                                                      ``reason`` (missing/corrupt/incompatible/other): once per
                                                      (version, reason), not per poll (:mod:`.rollout`)
``metarec_model_rollout_failing``          gauge      1 while the version ``--checkpoint`` designates cannot be
                                                      served (the previous one still is), else 0
``metarec_model_version_age_seconds``      gauge      now − write time of the served version's checkpoint files
``metarec_list_coverage_ratio``            gauge      distinct items of the last 1,000 published lists ÷
                                                      ``metarec_items_total`` (:mod:`.liststats`)
``metarec_list_diversity``                 gauge      mean over the last 1,000 lists (≤ 64 sampled per batch) of
                                                      their mean pairwise 1 − cosine of the item embeddings
=========================================  =========  ==============================================================

Extra (not in the contract): ``metarec_duplicates_total`` (redelivered events skipped),
``metarec_processing_errors_total`` (users whose events could not be processed: dead-lettered),
``metarec_publish_errors_total``, ``metarec_batch_events`` (histogram of micro-batch sizes),
``metarec_assigned_partitions`` (input partitions owned by this worker), ``metarec_commit_stalls_total``,
``metarec_broker_up`` (1 while the broker probe gets answers), ``metarec_state_users`` (user records indexed for
expiry), ``metarec_state_expired_total`` (user records deleted by ``--state-ttl``: a changelog tombstone each),
``metarec_state_watermark_seconds{partition}`` (event-time watermark the TTL is measured from),
``metarec_gap_events_total`` (input events and item contributions faust skipped or committed unprocessed, which
the worker fetched itself, see :mod:`stream.runtime.faust.skipped_ranges` and :mod:`stream.runtime.faust.item_agent`),
``metarec_users_forgotten_total`` (forget requests carried out, :mod:`stream.worker.forget`); the shared item
state's ``metarec_item_updates_applied_total`` (rows and deletions applied from ``<group>-items``),
``metarec_item_contributions_total`` (rows this worker's item agent merged into),
``metarec_item_contributions_invalid_total``, ``metarec_items_expired_total`` (rows it deleted).

Example
-------
>>> m = WorkerMetrics()
>>> m.events_consumed.inc(3)
>>> b"metarec_events_consumed_total 3.0" in m.render()
True
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from stream.worker.rollout import ModelRollout

#: contract names as they appear in the text exposition (counters with their ``_total`` suffix)
CONTRACT_METRICS = (
    "metarec_events_consumed_total", "metarec_events_invalid_total", "metarec_recommendations_published_total",
    "metarec_adaptation_seconds", "metarec_event_to_publish_seconds", "metarec_consumer_lag",
    "metarec_users_active", "metarec_adaptation_loss", "metarec_model_info", "metarec_online_hit_rate",
    "metarec_unknown_items_total", "metarec_items_total", "metarec_batches_total", "metarec_model_switches_total",
)


ADAPTATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000)


class WorkerMetrics:
    """All metrics of one worker, on a private :class:`CollectorRegistry` (several workers may share a process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events_consumed = Counter("metarec_events_consumed", "Input messages read (valid and invalid).",
                                       registry=r)
        self.events_invalid = Counter("metarec_events_invalid", "Input messages dead-lettered, by reason.",
                                      ["reason"], registry=r)
        self.recommendations_published = Counter("metarec_recommendations_published",
                                                 "Top-K lists published.", registry=r)
        self.adaptation_seconds = Histogram("metarec_adaptation_seconds",
                                            "Duration of the batched adaptation call of one micro-batch.",
                                            buckets=ADAPTATION_BUCKETS, registry=r)
        self.event_to_publish_seconds = Histogram(
            "metarec_event_to_publish_seconds",
            "Per event: from its Kafka record timestamp to the publication of its user's refreshed list.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("metarec_consumer_lag",
                                  "High watermark minus the next offset to process, per input partition.",
                                  ["topic", "partition"], registry=r)
        self.users_active = Gauge("metarec_users_active",
                                  "Distinct users with an event in the last active-window seconds.", registry=r)
        self.adaptation_loss = Gauge("metarec_adaptation_loss",
                                     "Mean pre-update loss on the incoming events of the last micro-batch.",
                                     registry=r)
        self.model_info = Gauge("metarec_model_info", "The model being served (value 1).",
                                ["version", "model", "meta"], registry=r)
        self.online_hit_rate = Gauge("metarec_online_hit_rate",
                                     "Rolling share of positive events whose item was in the user's last list.",
                                     registry=r)
        self.unknown_items = Counter("metarec_unknown_items", "Events whose item the model does not know.",
                                     registry=r)
        self.items = Gauge("metarec_items_total", "Item rows the worker can recommend, new items included.",
                           registry=r)
        self.item_state_lag = Gauge("metarec_item_state_lag_seconds", "Age of the newest shared item update "
                                    "this worker has applied (NaN before the first).", registry=r)
        self.item_state_lag.set(float("nan"))
        self.item_updates_applied = Counter("metarec_item_updates_applied", "Shared item rows (and deletions) "
                                            "applied from <group>-items.", registry=r)
        self.item_contributions = Counter("metarec_item_contributions", "Item rows the item agent of this "
                                          "worker has merged contributions into (one per item and batch).",
                                          registry=r)
        self.item_contributions_invalid = Counter("metarec_item_contributions_invalid", "Unreadable item "
                                                  "contributions skipped by the item agent.", registry=r)
        self.items_expired = Counter("metarec_items_expired", "Item rows the item agent deleted (TTL or size "
                                     "bound): one tombstone on <group>-items each.", registry=r)
        self.batches = Counter("metarec_batches", "Micro-batches processed.", registry=r)
        self.model_switches = Counter("metarec_model_switches", "Model versions switched to without restart.",
                                      registry=r)
        self._rollout_and_list_metrics(r)
        # extras
        self.duplicates = Counter("metarec_duplicates", "Redelivered input events skipped.", registry=r)
        self.processing_errors = Counter("metarec_processing_errors",
                                         "Events that failed processing and were dead-lettered.", registry=r)
        self.publish_errors = Counter("metarec_publish_errors", "Messages that could not be produced.", registry=r)
        self.batch_events = Histogram("metarec_batch_events", "Input messages per micro-batch.",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.commit_stalls = Counter("metarec_commit_stalls", "Partitions whose committed offset got stuck behind "
                                     "processed offsets (see stream.runtime.faust.lost_acks).", registry=r)
        self.assigned_partitions = Gauge("metarec_assigned_partitions", "Input partitions owned by this worker.",
                                         registry=r)
        self.broker_up = Gauge("metarec_broker_up", "1 while the broker answers the worker's metadata probe.",
                               registry=r)
        self.state_users = Gauge("metarec_state_users", "User records indexed for expiry on this worker.",
                                 registry=r)
        self.state_expired = Counter("metarec_state_expired", "User records expired by the state TTL "
                                     "(deleted: one changelog tombstone each).", registry=r)
        self.state_watermark = Gauge("metarec_state_watermark_seconds", "Event-time watermark of an input "
                                     "partition (epoch s): users older than it minus the state TTL expire.",
                                     ["partition"], registry=r)
        self.users_forgotten = Counter("metarec_users_forgotten", "Forget requests carried out (a changelog "
                                       "tombstone and an acknowledgement each; unknown users included).", registry=r)
        self.gap_events = Counter("metarec_gap_events", "Input events and item contributions faust skipped or "
                                  "committed unprocessed, fetched by the worker itself (runtime faust).", registry=r)
        self.state_restored_records = Counter("metarec_state_restored_records", "Changelog records read to restore "
                                              "the state of newly assigned partitions (runtime kafka).", registry=r)
        self.state_restore_seconds = Counter("metarec_state_restore_seconds", "Time spent restoring the state of "
                                             "newly assigned partitions (runtime kafka).", registry=r)
        self._model_labels: tuple[str, str, str] | None = None
        self._lag_labels: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _rollout_and_list_metrics(self, r: CollectorRegistry) -> None:
        """The model roll-out metrics (:mod:`stream.worker.rollout`) and the list gauges (:mod:`.liststats`)."""
        self.model_load_failures = Counter(
            "metarec_model_load_failures", "Distinct failures to load or switch to the model version --checkpoint "
            "designates (LATEST), by reason: missing, corrupt, incompatible, other. Counted once per distinct "
            "(version, reason) while the roll-out fails, not once per poll.", ["reason"], registry=r)
        self.model_rollout_failing = Gauge(
            "metarec_model_rollout_failing", "1 while the model version --checkpoint designates (LATEST) cannot be "
            "served and the worker keeps serving the previous one; 0 once it serves the designated version.",
            registry=r)
        self.model_version_age = Gauge(
            "metarec_model_version_age_seconds", "Seconds since the served model version's checkpoint was written "
            "(newest modification time of its directory and files; NaN before a model is served).", registry=r)
        #: the roll-out state behind the three metrics above (see :mod:`stream.worker.rollout`)
        self.rollout = ModelRollout(self.model_load_failures, self.model_rollout_failing, self.model_version_age)
        self.list_coverage = Gauge(
            "metarec_list_coverage_ratio", "Distinct items in the last 1000 lists this worker published, divided "
            "by metarec_items_total (the items it can recommend).", registry=r)
        self.list_diversity = Gauge(
            "metarec_list_diversity", "Mean over the last 1000 published lists of 2+ items (at most 64 evenly spaced "
            "per micro-batch) of their mean pairwise 1 - cosine of the model's item embeddings (NaN before such a "
            "list or for a model without them).",
            registry=r)
        self.list_diversity.set(float("nan"))

    def set_model(self, version: str, model: str, meta: str) -> None:
        """Point ``metarec_model_info`` at the model being served (the previous series is removed)."""
        with self._lock:
            if self._model_labels is not None:
                self.model_info.remove(*self._model_labels)
            self._model_labels = (str(version), str(model), str(meta))
            self.model_info.labels(*self._model_labels).set(1)
        self.rollout.served(str(version))

    def set_lag(self, lags: dict[tuple[str, int], int]) -> None:
        """Replace the lag series by ``{(topic, partition): lag}`` (partitions no longer owned disappear)."""
        with self._lock:
            labels = {(t, str(p)) for (t, p) in lags}
            for gone in self._lag_labels - labels:
                self.consumer_lag.remove(*gone)
            for (t, p), lag in lags.items():
                self.consumer_lag.labels(t, str(p)).set(max(0, int(lag)))
            self._lag_labels = labels

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class ActiveUsers:
    """Distinct users seen in the last ``window_s`` seconds (bounded: at most ``max_users`` remembered).

    >>> a = ActiveUsers(window_s=60)
    >>> a.touch(["u1", "u2"], now=0.0); a.touch(["u1"], now=50.0)
    >>> a.count(now=70.0)
    1
    """

    def __init__(self, window_s: float = 300.0, max_users: int = 1_000_000) -> None:
        self.window_s = float(window_s)
        self.max_users = int(max_users)
        self._last: OrderedDict[str, float] = OrderedDict()

    def touch(self, users: list[str] | set[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for u in users:
            self._last[u] = now
            self._last.move_to_end(u)
        while len(self._last) > self.max_users:
            self._last.popitem(last=False)

    def forget(self, user: str) -> None:
        """Drop ``user`` (forgotten: it no longer counts as active)."""
        self._last.pop(user, None)

    def count(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        limit = now - self.window_s
        while self._last:
            user, t = next(iter(self._last.items()))
            if t >= limit:
                break
            self._last.popitem(last=False)
        return len(self._last)

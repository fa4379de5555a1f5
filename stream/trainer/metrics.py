"""The trainer's Prometheus metrics and health (served by :class:`stream.worker.http.HealthServer`).

=================================================  =========  ======================================================
metric                                             type       meaning
=================================================  =========  ======================================================
``metarec_trainer_versions_total``                 counter    versions trained and published
``metarec_trainer_last_training_timestamp_seconds`` gauge     wall time the last version was published
``metarec_trainer_training_loss``                  gauge      final meta-loss of the last version
``metarec_trainer_training_seconds``               histogram  duration of one retraining
``metarec_trainer_events_total``                   counter    events read from the topic
``metarec_trainer_window_events``                  gauge      events in the training window
``metarec_trainer_failures_total``                 counter    retrainings that failed (the current version stays)
``metarec_trainer_model_info{version}``            gauge      1 for the version published last
=================================================  =========  ======================================================

Example
-------
>>> m = TrainerMetrics(); m.trained("v1", 2.0, 0.5)
>>> b"metarec_trainer_versions_total 1.0" in m.render()
True
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class TrainerMetrics:
    """All metrics of one trainer process, on a private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.versions = Counter("metarec_trainer_versions", "Versions trained and published.", registry=r)
        self.last_training = Gauge("metarec_trainer_last_training_timestamp_seconds",
                                   "Wall time the last version was published.", registry=r)
        self.loss = Gauge("metarec_trainer_training_loss", "Final meta-loss of the last version.", registry=r)
        self.seconds = Histogram("metarec_trainer_training_seconds", "Duration of one retraining.", registry=r,
                                 buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
        self.events = Counter("metarec_trainer_events", "Events read from the topic.", registry=r)
        self.window_events = Gauge("metarec_trainer_window_events", "Events in the training window.", registry=r)
        self.failures = Counter("metarec_trainer_failures", "Retrainings that failed.", registry=r)
        self.model_info = Gauge("metarec_trainer_model_info", "1 for the version published last.", ["version"],
                                registry=r)

    def serving(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)

    def trained(self, version: str, seconds: float, loss: float) -> None:
        self.versions.inc()
        self.seconds.observe(seconds)
        self.last_training.set(time.time())
        if loss == loss:
            self.loss.set(loss)
        self.serving(version)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TrainerHealth:
    """``/healthz``: the loop ran within ``stall_s`` (or is training); ``/readyz``: the topic is assigned."""

    def __init__(self, stall_s: float = 30.0) -> None:
        self.stall_s = stall_s
        self.assigned = False
        self.training = False
        self._beat = time.monotonic()

    def beat(self) -> None:
        self._beat = time.monotonic()

    def live(self) -> tuple[bool, dict]:
        quiet = time.monotonic() - self._beat
        ok = self.training or quiet < self.stall_s
        return ok, {"status": "ok" if ok else "stalled", "loop_quiet_s": round(quiet, 1), "training": self.training}

    def ready(self) -> tuple[bool, dict]:
        return self.assigned, {"status": "ready" if self.assigned else "starting"}

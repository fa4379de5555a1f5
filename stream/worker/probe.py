"""A background thread that asks the broker for metadata every few seconds: the worker's view of broker health.

faust and aiokafka retry silently while the broker is away (produce requests wait up to faust's producer request
timeout, fetches and commits are retried), which is what lets the worker ride out an outage without restart — but
it also hides the outage. The probe makes it visible: every ``interval_s`` it sends a metadata request with the
same client settings (security included) as every other client, and reports success or failure to
:meth:`stream.worker.http.WorkerHealth.broker_probe` (→ ``/readyz`` reason, log lines, ``metarec_broker_up`` gauge).

It runs in its own thread, so a blocked event loop does not hide a broker outage and vice versa.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class BrokerProbe:
    """Probe ``bootstrap`` every ``interval_s`` seconds (each request times out after ``timeout_s``)."""

    def __init__(self, bootstrap: str, health: Any, metrics: Any = None, *, interval_s: float = 2.0,
                 timeout_s: float = 2.0, overrides: Mapping[str, Any] | None = None) -> None:
        from confluent_kafka.admin import AdminClient

        from stream.kafka.client import client_config

        self.health, self.metrics = health, metrics
        self.interval_s, self.timeout_s = float(interval_s), float(timeout_s)
        self._admin = AdminClient(client_config(bootstrap, overrides))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metarec-broker-probe", daemon=True)

    def probe_once(self) -> bool:
        try:
            self._admin.list_topics(timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - KafkaException and friends: the broker did not answer
            err = exc.args[0] if exc.args else exc
            text = err.str() if hasattr(err, "str") else str(err)
            self.health.broker_probe(False, f"metadata request failed: {text}")
            ok = False
        else:
            self.health.broker_probe(True)
            ok = True
        if self.metrics is not None:
            self.metrics.broker_up.set(1 if ok else 0)
        return ok

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe_once()
            self._stop.wait(self.interval_s)

    def start(self) -> BrokerProbe:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 1.0)

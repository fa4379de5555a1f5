"""The worker's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` (a thread, independent of the event loop).

* ``GET /metrics`` — Prometheus text format (:class:`~stream.worker.metrics.WorkerMetrics`).
* ``GET /healthz`` — 200 while the processing loop is alive: the loop stamps :attr:`WorkerHealth.heartbeat` every
  iteration and every idle tick (1 s); 503 when the stamp is older than ``stale_after_s`` or the agent has died.
* ``GET /readyz`` — 200 once a model is loaded and the consumer group has assigned this worker its partitions
  (after the state tables, and the shared item state, were restored); 503 before, during a rebalance, and while the broker has been
  unreachable (the probe's metadata requests fail) or a micro-batch's delivery/commit has been stalled for more
  than ``stall_after_s`` (default 5 s). The body's ``reason`` says why, e.g.
  ``"broker unreachable since 2026-11-23T14:31:07Z (15.2 s): ..."``.

* ``GET /items?id=ITEM`` (workers) — the worker's current row of an item, JSON: what it ranks with.

Semantics for orchestrators: ``/healthz`` answers "is the process able to make progress by itself?" — a broker
outage does NOT fail it (restarting the worker would not bring the broker back, and the worker resumes by itself
when the broker returns); ``/readyz`` answers "is it doing its job right now?" — it fails during an outage, so
dashboards and load balancers see the outage, and returns to 200 by itself afterwards.

The server runs in a daemon thread so that a scrape never waits for the event loop, and a blocked loop shows up
as a stale heartbeat rather than as a hung scrape.

Example
-------
>>> from stream.worker.metrics import WorkerMetrics
>>> health = WorkerHealth(); server = HealthServer(WorkerMetrics(), health, port=0).start()
>>> import urllib.request, urllib.error
>>> try: urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz")
... except urllib.error.HTTPError as e: print(e.code)
503
>>> server.close()
"""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Protocol
from urllib.parse import parse_qs

from adapters.errors import MetarecError

log = logging.getLogger(__name__)

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class WorkerHealth:
    """Liveness and readiness facts, written by the event loop, read by the HTTP thread."""

    stale_after_s: float = 30.0
    heartbeat: float = field(default_factory=time.monotonic)
    agent_alive: bool = True
    model_loaded: bool = False
    assigned: bool = False  #: partitions assigned and tables restored
    partitions: int = 0
    model_version: str = ""
    stall_after_s: float = 5.0  #: outage/stall duration after which /readyz turns 503
    broker_down_since: float | None = None  #: wall time of the first failed broker probe of the current outage
    broker_error: str = ""
    stalled_since: float | None = None  #: wall time a micro-batch started waiting for delivery/commit
    stalled_what: str = ""
    items_restored: bool = True  #: the shared item state was restored (False until then; True: local item state)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def broker_probe(self, ok: bool, error: str = "", now: float | None = None) -> None:
        """Result of one broker probe (:class:`stream.worker.probe.BrokerProbe`); logs the outage's start and end."""
        now = time.time() if now is None else now
        if ok:
            if self.broker_down_since is not None:
                log.warning("broker reachable again after %.1f s", now - self.broker_down_since)
            self.broker_down_since, self.broker_error = None, ""
        elif self.broker_down_since is None:
            self.broker_down_since, self.broker_error = now, error
            log.warning("broker unreachable: %s", error)

    def stall(self, what: str | None, now: float | None = None) -> None:
        """Mark the start (``what``) or the end (None) of a wait on the broker inside a micro-batch."""
        if what is None:
            if self.stalled_since is not None:
                waited = (time.time() if now is None else now) - self.stalled_since
                if waited > self.stall_after_s:
                    log.warning("%s completed after %.1f s", self.stalled_what, waited)
            self.stalled_since, self.stalled_what = None, ""
        else:
            self.stalled_since, self.stalled_what = (time.time() if now is None else now), what

    def problem(self, now: float | None = None) -> str | None:
        """Why the worker is not doing its job right now (None: nothing wrong beyond the threshold)."""
        now = time.time() if now is None else now
        stalled = self.stalled_since is not None and now - self.stalled_since > self.stall_after_s
        if self.broker_down_since is not None and (now - self.broker_down_since > self.stall_after_s or stalled):
            return (f"broker unreachable since {_iso(self.broker_down_since)} "
                    f"({now - self.broker_down_since:.1f} s): {self.broker_error}")
        if stalled:
            return f"{self.stalled_what} stalled since {_iso(self.stalled_since)} ({now - self.stalled_since:.1f} s)"
        return None

    def live(self) -> tuple[bool, dict]:
        age = time.monotonic() - self.heartbeat
        ok = self.agent_alive and age <= self.stale_after_s
        return ok, {"status": "ok" if ok else "stale", "heartbeat_age_s": round(age, 3),
                    "agent_alive": self.agent_alive}

    def ready(self) -> tuple[bool, dict]:
        problem = self.problem()
        if not self.model_loaded:
            reason = "no model loaded"
        elif not self.assigned:
            reason = "waiting for partition assignment (rebalance or state restore)"
        elif not self.items_restored:
            reason = "restoring the shared item state"
        else:
            reason = problem
        ok = reason is None
        body = {"status": "ready" if ok else "not ready", "model_loaded": self.model_loaded,
                "partitions_assigned": self.assigned, "partitions": self.partitions,
                "model_version": self.model_version, "items_restored": self.items_restored}
        if reason is not None:
            body["reason"] = reason
        if problem is not None and reason != problem:
            body["problem"] = problem
        return ok, body


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Exposition(Protocol):
    """What ``/metrics`` serves (:class:`~stream.worker.metrics.WorkerMetrics`, the trainer's metrics)."""

    def render(self) -> bytes: ...


class Probes(Protocol):
    """What ``/healthz`` and ``/readyz`` answer: ``(ok, JSON body)`` (:class:`WorkerHealth`, the trainer's)."""

    def live(self) -> tuple[bool, dict]: ...

    def ready(self) -> tuple[bool, dict]: ...


class HealthServer:
    """A small threaded HTTP server for the three endpoints; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(self, metrics: Exposition, health: Probes, host: str = "127.0.0.1", port: int = 9400) -> None:
        self.metrics, self.health = metrics, health
        #: ``GET /items?id=ITEM``: the worker's current row of an item (JSON; 404 for an item it does not hold)
        self.items: Callable[[str], dict | None] | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._send(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                    elif path == "/healthz":
                        ok, body = outer.health.live()
                        self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
                    elif path == "/readyz":
                        ok, body = outer.health.ready()
                        self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
                    elif path == "/items" and outer.items is not None:
                        query = parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
                        row = outer.items(query.get("id", [""])[0])
                        self._send(200 if row is not None else 404,
                                   json.dumps(row if row is not None else {"error": "unknown item"}).encode(),
                                   "application/json")
                    else:
                        self._send(404, b'{"error": "not found"}', "application/json")
                except BrokenPipeError:  # pragma: no cover - client went away
                    pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server API
                log.debug("http: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise MetarecError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                               f"(pick another --metrics-port)") from None
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metarec-http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics", self.host, self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

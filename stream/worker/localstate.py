"""The worker's local state directory: one worker per directory, and a local cache trusted only after a clean stop."""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
from pathlib import Path

from adapters.errors import MetarecError

log = logging.getLogger(__name__)


class DirLock:
    """An exclusive lock on the data directory: two workers must not share one (RocksDB would refuse later)."""

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._fh = open(directory / ".metarec-worker.lock", "w")  # noqa: SIM115 - held for the process lifetime
        except OSError as exc:
            raise MetarecError(f"cannot use data directory {directory}: {exc.strerror or exc} "
                               f"(pick another --data-dir)") from None
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise MetarecError(f"data directory {directory} is used by another worker on this host "
                               f"(give each worker its own --data-dir)") from None
        self._fh.write(f"{socket.gethostname()} {os.getpid()}\n")
        self._fh.flush()

    def release(self) -> None:
        try:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
        finally:
            self._fh.close()


CLEAN_STOP = ".metarec-clean-stop"  #: in --data-dir: the local state cache was closed by a clean stop


def claim_local_state(data_dir: Path, store: str, state_dirs: list[Path] | None = None) -> bool:
    """Trust the local RocksDB cache only after a clean stop; otherwise discard it (True if discarded).

    The local store is written before the changelog has the records (faust), and a kill -9 can leave it holding
    state the changelog never received: restoring on top of it would keep that state locally while the
    changelog — what any other worker restores — misses it for good (and on brokers whose high watermark
    undercounts, faust refuses such a store outright). After an unclean stop the cache is deleted and the state is
    restored from the changelog, the source of truth (as Kafka Streams does with its checkpoint file). The
    clean-stop marker is removed while the worker runs and written back by :func:`release_local_state`.

    ``state_dirs`` names the runtime's store directories (default: faust's ``v*/tables``).
    """
    marker = data_dir / CLEAN_STOP
    clean = marker.exists()
    if state_dirs is None:
        state_dirs = list(data_dir.glob("v*/tables"))
    tables = [d for d in state_dirs if d.is_dir()]
    discarded = False
    if store == "rocksdb" and tables and not clean:
        log.warning("the previous worker on %s did not stop cleanly: discarding its local state cache, the state "
                    "is restored from the changelog", data_dir)
        for d in tables:
            shutil.rmtree(d)
        discarded = True
    marker.unlink(missing_ok=True)
    return discarded


def release_local_state(data_dir: Path) -> None:
    """Mark the local state cache as closed cleanly (call after the app stopped)."""
    (data_dir / CLEAN_STOP).write_text("clean stop\n")



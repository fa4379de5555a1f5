"""How fast a worker restores its state: a fresh kafka-runtime worker joins a group whose changelog is full.

:func:`measure_restore` starts one ``metarec worker --runtime kafka`` with an empty local state directory in the
consumer group of a finished throughput run (:func:`stream.bench.endtoend.measure_throughput` with
``cleanup=False``): it owns every partition and restores them from the changelog before it is ready. The figures are
the worker's own (``metarec_state_restored_records_total`` / ``metarec_state_restore_seconds_total``: every
changelog record read, over the restore thread's time) and the wall time from start to ``/readyz`` 200.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

from stream.bench.workers import WorkerProcess, WorkerSettings


@dataclass
class RestoreResult:
    records: int  #: changelog records read
    seconds: float  #: restore time, as the worker measured it
    records_per_s: float
    ready_after_s: float  #: process start → ready (group join, topic checks and restore included)


def measure_restore(bootstrap: str, settings: WorkerSettings, input_topic: str, output_topic: str,
                    group: str) -> RestoreResult:
    """Restore the state of ``group`` into a fresh kafka-runtime worker (see the module docstring)."""
    t0 = time.monotonic()
    with WorkerProcess(bootstrap, replace(settings, runtime="kafka"), input_topic, output_topic, group) as w:
        w.wait_ready(timeout=600)
        ready = time.monotonic() - t0
        m = w.metrics()
    records = int(m.get("metarec_state_restored_records_total", 0))
    seconds = float(m.get("metarec_state_restore_seconds_total", 0.0))
    return RestoreResult(records, seconds, records / seconds if seconds > 0 else float("nan"), ready)

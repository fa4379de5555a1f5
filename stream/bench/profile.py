"""Profile a real worker under load with py-spy: where does a worker's CPU time go?

``python -m stream.bench.profile --dataset ml-1m --limit 100000 --out reports/profile`` starts an embedded broker,
pre-loads the events, starts one ``metarec worker`` (the benchmark's checkpoint) and samples it with
``py-spy record --format raw --threads`` from its start until every event is published. It writes the collapsed
stacks (``worker.txt``; open with speedscope or flamegraph.pl) and ``summary.json``: the share of samples per
thread and per category (the innermost frame of the project's or a library's code decides):

* ``learner``: ``adapters/`` and torch (adaptation, ranking, records) — runs in the ``metarec-adapt`` thread
* ``faust``: faust, mode, aiokafka consumer/fetcher/group coordinator, confluent-kafka, asyncio's event loop
* ``produce``: aiokafka's producer and the faust runtime's own output code under ``stream/runtime/faust/``
  (``delivery.py``, ``changelog_barrier.py``, and any ``*publish*``, ``*changelog*`` or ``*end_marker*`` function)
* ``json``: ``json`` encoding/decoding (input parsing, output lists)
* ``worker``: ``stream/`` code itself (batch assembly, metrics bookkeeping), the rest of ``stream/runtime/faust/``
  included: the project's faust runtime is the worker's code, not faust's
* ``metrics``: prometheus-client; ``table``: faust tables / rocksdict and the runtime's own table code
  (``stream/runtime/faust/table.py``: user records and processed-offset marks); ``other``.

Needs ``py-spy`` (dev extra) and permission to ptrace the child (root, or ``kernel.yama.ptrace_scope=0``).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

RUNTIME = "stream/runtime/faust/"  #: the project's faust runtime: the worker's own code (faust's is ``faust/``)


@dataclass(frozen=True)
class InFile:
    """Matches a frame ``function (file:line)`` with ``path`` in its file and ``function`` in its function name."""

    path: str
    function: str = ""

    def __call__(self, frame: str) -> bool:
        function, _, where = frame.rpartition(" (")
        return self.path in where.rpartition(":")[0] and self.function in function


Needle = str | InFile  #: a substring of the whole frame, or a file (and function) condition

RULES: tuple[tuple[str, tuple[Needle, ...]], ...] = (  # (category, needles); the first rule matching a frame wins
    ("json", ("json/decoder.py", "json/encoder.py", "json/__init__.py", "stream/kafka/schema.py")),
    ("metrics", ("prometheus_client/",)),
    ("table", ("faust/tables/", "faust/stores/", "rocksdict", InFile(RUNTIME + "table.py"))),
    ("produce", ("aiokafka/producer/", "faust/transport/producer.py", InFile(RUNTIME + "delivery.py"),
                 InFile(RUNTIME + "changelog_barrier.py"), InFile(RUNTIME, "publish"), InFile(RUNTIME, "changelog"),
                 InFile(RUNTIME, "end_marker"))),
    ("learner", ("adapters/", "torch/", "numpy/")),
    ("worker", (RUNTIME,)),  # before "faust": "faust/" is also a substring of the runtime's path
    ("faust", ("faust/", "mode/", "aiokafka/", "asyncio/", "selectors.py", "venusian", "confluent_kafka/")),
    ("worker", ("stream/",)),
)


def _matches(needle: Needle, frame: str) -> bool:
    return needle in frame if isinstance(needle, str) else needle(frame)


def categorize(stack: str) -> str:
    """Category of one collapsed stack (frames outermost → innermost, ``;``-separated): innermost match wins."""
    for frame in reversed(stack.split(";")):
        for name, needles in RULES:
            if any(_matches(n, frame) for n in needles):
                return name
    return "other"


def _thread_name(frame: str) -> str:
    """``thread (1234): Thread-20 (process_request_thread)`` → ``Thread (process_request_thread)``."""
    name = re.sub(r"^thread \(\d+\):?\s*", "", frame)
    return re.sub(r"Thread-\d+", "Thread", name) or "unnamed"


def summarize(raw: str) -> dict[str, object]:
    """Shares of samples per thread and per category from py-spy's ``--format raw`` output."""
    by_cat: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    by_thread_cat: dict[str, Counter[str]] = defaultdict(Counter)
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        thread = _thread_name(stack.split(";", 1)[0])
        cat = categorize(stack)
        by_cat[cat] += n
        by_thread[thread] += n
        by_thread_cat[thread][cat] += n
        leaf[stack.rsplit(";", 1)[-1]] += n
        total += n
    share = (lambda c: {k: round(v / total, 4) for k, v in c.most_common()}) if total else (lambda c: {})
    return {"samples": total, "categories": share(by_cat), "threads": share(by_thread),
            "threads_categories": {t: share(c) for t, c in by_thread_cat.items()},
            "top_leaf_frames": share(Counter(dict(leaf.most_common(25))))}


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a developer tool, run by hand
    from adapters.data.datasets import load_dataset
    from stream.bench.endtoend import _PUBLISHED_EVENTS
    from stream.bench.inputs import bench_checkpoint, cached_checkpoint, preload
    from stream.bench.workers import WorkerProcess, WorkerSettings
    from stream.kafka.broker import EmbeddedBroker

    p = argparse.ArgumentParser(prog="python -m stream.bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--limit", type=int, default=100_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL")
    p.add_argument("--out", required=True)
    p.add_argument("--worker-arg", action="append", default=[], help="extra flag for the worker (repeatable)")
    p.add_argument("--launcher", default=None,
                   help="worker entry point instead of `python -m stream` (e.g. a script applying a patch)")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full = load_dataset(args.dataset)
    ds = full.head(args.limit)
    ck = Path(args.checkpoint) if args.checkpoint else (cached_checkpoint(full) or bench_checkpoint(ds))
    with EmbeddedBroker() as broker:
        topic = f"profile-in-{uuid.uuid4().hex[:6]}"
        preload(ds, broker.bootstrap, topic, args.partitions)
        settings = WorkerSettings(checkpoint=ck, partitions=args.partitions, extra=list(args.worker_arg),
                                  launcher=[sys.executable, args.launcher] if args.launcher else None)
        worker = WorkerProcess(broker.bootstrap, settings, topic, f"profile-out-{topic}", f"profile-{topic}").start()
        cmd = [spy, "record", "--pid", str(worker.pid), "--format", "raw", "--threads", "--rate", str(args.rate),
               "--output", str(out / "worker.txt"), "--nonblocking"] + (["--gil"] if args.gil else [])
        worker.wait_url()  # model loaded, HTTP up: the imports are over
        spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            t0 = time.time()
            while worker.metrics().get(_PUBLISHED_EVENTS, 0.0) < len(ds):
                time.sleep(0.5)
            seconds = time.time() - t0
        finally:
            spy_proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy_proc.wait(timeout=60)
            final = worker.metrics()
            worker.stop()
    summary = summarize((out / "worker.txt").read_text())
    summary.update(events=len(ds), wall_seconds=seconds, worker_metrics={
        k: v for k, v in final.items() if k.startswith("metarec_") and not k.endswith("_created")})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("samples", "categories", "threads", "wall_seconds")}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

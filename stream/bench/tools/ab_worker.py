"""A/B of real ``metarec worker`` variants on one embedded broker: throughput, or latency at a fixed rate.

Each variant is ``NAME=FLAGS`` (extra worker flags, e.g. ``faust=--delivery faust``) or ``NAME@DIR`` (the worker's
code taken from another checkout, e.g. a ``git worktree`` of an older commit; run this script from outside the
repository so that the variants' code, not the current directory's, is imported). Variants alternate, ``--reps``
rounds, on the same pre-loaded topic (throughput) or at the same offered rate (latency). Uses the cached
benchmark checkpoint of the full dataset (``metarec bench`` creates it).

Run: ``python -m stream.bench.tools.ab_worker --events 200000 --reps 2 default= faust=--delivery faust``
     ``python -m stream.bench.tools.ab_worker --latency 5200 --seconds 30 default= slow="--batch-seconds 100 --fetch-max-wait-ms 100"``
"""
from __future__ import annotations

import argparse
import os
import shlex
import uuid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", help="NAME=FLAGS or NAME@DIR")
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--events", type=int, default=200_000, help="throughput: first N events (default 200000)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--latency", type=float, default=None, help="offered events/s: measure latency instead")
    p.add_argument("--seconds", type=float, default=30.0, help="latency: paced seconds (default 30)")
    args = p.parse_args()

    from adapters.data.datasets import load_dataset
    from adapters.errors import MetarecError
    from stream.bench.endtoend import measure_latency, measure_throughput
    from stream.bench.inputs import cached_checkpoint, preload
    from stream.bench.workers import WorkerSettings
    from stream.kafka.broker import EmbeddedBroker

    full = load_dataset(args.dataset)
    ck = cached_checkpoint(full, None)
    if ck is None:
        raise MetarecError("no cached benchmark checkpoint: run `metarec bench` once first")
    settings = {}
    for v in args.variants:
        if "@" in v and ("=" not in v or v.index("@") < v.index("=")):
            name, path = v.split("@", 1)
            settings[name] = WorkerSettings(checkpoint=ck, env=dict(os.environ, PYTHONPATH=path))
        else:
            name, flags = v.split("=", 1)
            settings[name] = WorkerSettings(checkpoint=ck, extra=shlex.split(flags))
    with EmbeddedBroker(host="127.0.0.1") as broker:
        topic = None
        if args.latency is None:
            topic = f"ab-{uuid.uuid4().hex[:6]}"
            preload(full.head(args.events), broker.bootstrap, topic, 4)
        for rep in range(args.reps):
            for name, s in settings.items():
                if args.latency is None:
                    r = measure_throughput(broker.bootstrap, s, topic, args.events, 1)
                    print(f"{name}\tround {rep}\t{r.events_per_s:,.0f} events/s", flush=True)
                else:
                    r = measure_latency(broker.bootstrap, s, full, args.latency, args.seconds)
                    print(f"{name}\tround {rep}\t{args.latency:,.0f}/s offered: p50 {r.latency_p50_s * 1e3:.0f} ms, "
                          f"p99 {r.latency_p99_s * 1e3:.0f} ms, max {r.latency_max_s * 1e3:.0f} ms", flush=True)


if __name__ == "__main__":
    main()

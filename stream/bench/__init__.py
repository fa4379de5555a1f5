"""The performance benchmark behind ``metarec bench`` (see docs/PERFORMANCE.md).

Modules, one measurement each:

* :mod:`stream.bench.runner` — :class:`~stream.bench.runner.BenchConfig` and :func:`~stream.bench.runner.run_bench`:
  every measurement in one run, the contract JSON;
* :mod:`stream.bench.inputs` — the worker checkpoint (trained once, cached) and the pre-loaded input topic;
* :mod:`stream.bench.passthrough` — runs the bare faust agent of :mod:`stream.runtime.faust.passthrough` (the stream
  machinery's ceiling);
* :mod:`stream.bench.workers` — real ``metarec worker`` child processes, their ``/metrics`` and peak memory;
* :mod:`stream.bench.endtoend` — worker throughput (1 or 2 processes) and event→list latency at a fixed rate;
* :mod:`stream.bench.adaptation` — the Adapter alone (users/s);
* :mod:`stream.bench.references` — River full ranking, the naive per-event loop, the batched learner;
* :mod:`stream.bench.topics` — bulk topic reads, state size from the changelog;
* :mod:`stream.bench.report` — the targets and the table;
* :mod:`stream.bench.profile` — py-spy profile of a worker under load (a developer tool).
"""

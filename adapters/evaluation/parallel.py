"""The prequential protocol with its models in separate processes: the same figures, in a fraction of the time.

Every model of an evaluation learns and scores the stream on its own: nothing one model does changes what another
sees. :func:`run_parallel` therefore runs :func:`~adapters.evaluation.prequential.run_protocol` once per model, in
``workers`` forked child processes (each with one torch thread), heaviest models first, and merges their traces
into one :class:`~adapters.evaluation.prequential.PrequentialResult`: bit for bit what one process computes (a test
compares the two). A child inherits the models and the stream from the parent (fork: nothing is pickled on the way
in); it sends back its model's trace. Progress: each child counts the events it has stepped through in shared
memory, the parent shows the sum.

Example
-------
>>> from adapters.evaluation.prequential import EventStream, PrequentialConfig
>>> from adapters.evaluation.baselines import Popularity
>>> stream = EventStream.from_arrays(users=["a", "b", "c", "d"], items=["x", "x", "y", "x"], ratings=[5] * 4,
...                                  history=0.5)
>>> run_parallel(stream, [Popularity(stream)], PrequentialConfig(history=0.5), workers=2,
...              progress=False).summary()["popularity"]["hr@10"]
0.5
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from typing import Any

from adapters.errors import MetarecError
from adapters.evaluation.prequential import (EventStream, ModelTrace, PrequentialConfig, PrequentialResult, StreamModel,
                                             run_protocol)
from adapters.evaluation.progressbar import event_progress

log = logging.getLogger(__name__)

#: relative cost of a model by name, to start the heaviest first (unknown names: learners' cost)
COST = {"popularity": 1, "popularity_decayed": 1, "cooccurrence": 2, "river_biasedmf": 5}


def default_workers(models: Sequence[StreamModel]) -> int:
    """One process per model, at most one per CPU."""
    return max(1, min(len(models), os.cpu_count() or 1))


#: what the forked children inherit (set by the parent just before forking): the models, the stream, the protocol's
#: settings and the shared event counter; nothing of it is pickled
_RUN: dict[str, Any] = {}


def _child(index: int) -> tuple[int, ModelTrace]:
    """In a child: run model ``index`` through the protocol; its trace."""
    import torch

    torch.set_num_threads(1)
    model = _RUN["models"][index]
    result = run_protocol(_RUN["stream"], [_Counting(model, _RUN["done"])], _RUN["config"], progress=False)
    return index, result.traces[model.name]


class _Counting:
    """A model that counts, in shared memory, the events it has learned or stepped through."""

    def __init__(self, model: StreamModel, done: Any) -> None:
        self.model, self.done, self.name = model, done, model.name

    def learn(self, lo: int, hi: int) -> None:
        self.model.learn(lo, hi)
        with self.done.get_lock():
            self.done.value += hi - lo

    def step(self, lo: int, hi: int, rank_rows: Any) -> Any:
        out = self.model.step(lo, hi, rank_rows)
        with self.done.get_lock():
            self.done.value += hi - lo
        return out


def run_parallel(stream: EventStream, models: Sequence[StreamModel], config: PrequentialConfig,
                 workers: int | None = None, progress: bool = True) -> PrequentialResult:
    """:func:`~adapters.evaluation.prequential.run_protocol` with each model in its own forked process."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise MetarecError("two models share a name")
    workers = default_workers(models) if workers is None else int(workers)
    if workers <= 1 or len(models) <= 1 or "fork" not in mp.get_all_start_methods():
        return run_protocol(stream, models, config, progress=progress)
    order = sorted(range(len(models)), key=lambda k: -COST.get(models[k].name, 10))
    ctx = mp.get_context("fork")
    done = ctx.Value("q", 0)
    total = len(stream) * len(models)
    _RUN.update(models=list(models), stream=stream, config=config, done=done)
    traces: dict[int, ModelTrace] = {}
    t0 = time.perf_counter()
    try:
        with ctx.Pool(min(workers, len(models))) as pool:
            pending = pool.imap_unordered(_child, order)
            bar = event_progress(progress)
            with bar:
                task = bar.add_task(f"{len(models)} models in {workers} processes", total=total) if bar else None
                _collect(pending, traces, len(models), bar, task, done)
    finally:
        _RUN.clear()
    log.info("prequential protocol: %d models in %d processes, %.1f s", len(models), workers, time.perf_counter() - t0)
    return PrequentialResult(stream=stream, config=config, traces={names[k]: traces[k] for k in range(len(models))})


def _collect(pending: Any, traces: dict[int, ModelTrace], n: int, bar: Any, task: Any, done: Any) -> None:
    """Gather the children's traces as they finish, updating the progress bar meanwhile."""
    while len(traces) < n:
        try:
            index, trace = pending.next(timeout=0.5)
        except mp.TimeoutError:
            pass
        else:
            traces[index] = trace
        if bar:
            bar.update(task, completed=done.value)

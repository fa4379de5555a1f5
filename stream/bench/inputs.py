"""What the benchmark runs on: the dataset slice, the worker's checkpoint (trained once, cached), the input topic.

The checkpoint is a quick model of the default kind (:data:`TRAIN_RECIPE`: ``seq``/``fomaml``) trained by :func:`adapters.meta.training.train` on the benchmarked
events (the speed of the worker does not depend on how well it was trained, only on the model's shapes). It is
cached under ``$METAREC_DATA_DIR/bench/`` keyed by the dataset fingerprint, the number of events and the inner-loop
configuration training gives today, so a second run reuses it; a run on the first N events reuses the whole
dataset's checkpoint when that one is cached.

Example
-------
>>> ck_dir = bench_checkpoint(load_dataset("ml-100k").head(3000))   # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the quick training recipe of the benchmark's worker checkpoint
TRAIN_RECIPE = {"model": "seq", "meta": "fomaml", "epochs": 1, "pretrain_epochs": 1}  # the default model


def cache_dir(data_dir: str | Path | None = None) -> Path:
    base = Path(data_dir or os.environ.get("METAREC_DATA_DIR") or Path.home() / ".cache" / "metarec")
    return base / "bench"


def _train_config(dataset: Any) -> Any:
    from adapters.meta.training import TrainConfig

    return TrainConfig(model=TRAIN_RECIPE["model"], meta=TRAIN_RECIPE["meta"], epochs=TRAIN_RECIPE["epochs"],
                       pretrain_epochs=TRAIN_RECIPE["pretrain_epochs"], dataset_spec=dataset.name)


def _inner_tag(dataset: Any) -> str:
    """Short hash of the inner-loop configuration training gives the model today: a checkpoint cached under older
    training defaults (e.g. before the closed-form rating block) is not reused, so the worker serves what
    ``metarec train`` would produce now."""
    import hashlib
    import json
    from dataclasses import asdict

    from adapters.meta.training import inner_config

    text = json.dumps(asdict(inner_config(_train_config(dataset))), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _checkpoint_dir(dataset: Any, data_dir: str | Path | None) -> Path:
    r = TRAIN_RECIPE
    name = (f"{dataset.name}-{dataset.fingerprint[:12]}-{len(dataset)}-{r['model']}-{r['meta']}"
            f"-e{r['epochs']}p{r['pretrain_epochs']}-i{_inner_tag(dataset)}")
    return cache_dir(data_dir) / "checkpoints" / name


def cached_checkpoint(dataset: Any, data_dir: str | Path | None = None) -> Path | None:
    """The cached benchmark checkpoint of exactly ``dataset``, if there is a usable one."""
    from adapters.meta.checkpoint import Checkpoint
    from adapters.errors import MetarecError

    directory = _checkpoint_dir(dataset, data_dir)
    if not (directory / "config.json").is_file():
        return None
    try:
        Checkpoint.load(directory)
    except MetarecError as exc:
        log.warning("cached benchmark checkpoint %s is unusable (%s)", directory, exc)
        return None
    log.info("reusing benchmark checkpoint %s", directory)
    return directory


def bench_checkpoint(dataset: Any, data_dir: str | Path | None = None,
                     on_step: Callable[[int, int, int, float], None] | None = None) -> Path:
    """Directory of a worker checkpoint trained on ``dataset`` (trained now unless cached)."""
    from adapters.meta.training import train

    cached = cached_checkpoint(dataset, data_dir)
    if cached is not None:
        return cached
    directory = _checkpoint_dir(dataset, data_dir)
    ck = train(dataset, _train_config(dataset), on_step=on_step)
    ck.save(directory)
    return directory


def preload(dataset: Any, bootstrap: str, topic: str, partitions: int,
            progress: Callable[[int], None] | None = None) -> int:
    """Write every event of ``dataset`` to ``topic`` (murmur2 partitioner, keyed by user); the count sent."""
    from stream.kafka.replay import replay_dataset

    stats = replay_dataset(dataset, bootstrap, topic, partitions=partitions, progress=progress)
    log.info("pre-loaded %s", stats.summary())
    return stats.sent

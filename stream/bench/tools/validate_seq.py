"""Validation split for the online defaults: the prequential protocol on the first ``--frac`` of a dataset only.

Nothing is tuned on the scored part of the real protocol: with ``--frac 0.5``, θ0 is meta-trained on the first 25 %
of the dataset and the next 25 % are scored, in 1-second micro-batches, with the learner settings given as JSON
(``OnlineConfig`` fields; one model per entry, all in the same run). One JSON line on stdout (and in ``--log``).

    .venv/bin/python -m stream.bench.tools.validate_seq '{"default": {}, "no_prior": {"item_prior": 0}}'
    .venv/bin/python -m stream.bench.tools.validate_seq --model mf '{"mf": {}}'
    .venv/bin/python -m stream.bench.tools.validate_seq --cooccurrence '{"default": {}}'     # + the co-occurrence baseline
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from adapters.evaluation.baselines import LearnerModel, RiverBiasedMF
from adapters.meta.checkpoint import Checkpoint
from adapters.evaluation.cooccurrence import Cooccurrence
from adapters.data.datasets import load_dataset
from adapters.online.learner import OnlineConfig, OnlineLearner
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
from adapters.meta.training import TrainConfig, train


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", help='JSON {"name": {OnlineConfig field: value}}')
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--frac", type=float, default=0.5)
    ap.add_argument("--model", default="seq")
    ap.add_argument("--meta", default="maml")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--model-config", default="{}", help="JSON model config overrides, e.g. '{\"support_decay\": 0.7}'")
    ap.add_argument("--checkpoint", default=None, help="reuse (or write) θ0 here")
    ap.add_argument("--cooccurrence", action="store_true", help="also run the per-event co-occurrence baseline")
    ap.add_argument("--river", action="store_true", help="also run River BiasedMF")
    ap.add_argument("--batch-seconds", type=float, default=1.0)
    ap.add_argument("--log", default=None)
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    part = ds.slice(0, int(len(ds) * a.frac)) if a.frac < 1 else ds
    stream = EventStream.from_dataset(part, history=0.5)
    t0 = time.time()
    if a.checkpoint and os.path.exists(a.checkpoint):
        ck = Checkpoint.load(a.checkpoint)
    else:
        ck = train(part, TrainConfig(model=a.model, meta=a.meta, history=0.5, epochs=a.epochs,
                                     model_config=json.loads(a.model_config)))
        if a.checkpoint:
            ck.save(a.checkpoint)
    train_s = time.time() - t0
    models = [LearnerModel(stream, OnlineLearner(ck, OnlineConfig(**kw)), name) for name, kw in json.loads(a.variants).items()]
    if a.cooccurrence:
        models.append(Cooccurrence(stream))
    if a.river:
        models.append(RiverBiasedMF(stream))
    res = run_protocol(stream, models, PrequentialConfig(history=0.5, batch_seconds=a.batch_seconds or None), progress=False)
    out = {"args": vars(a), "train_s": round(train_s, 1), "run_s": round(time.time() - t0 - train_s, 1),
           "models": {k: {m: round(v, 4) for m, v in d.items()} for k, d in res.summary().items()}}
    print(json.dumps(out))
    if a.log:
        with open(a.log, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()

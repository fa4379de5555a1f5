"""Validation split for mf's defaults: the prequential protocol on the first ``--frac`` of a dataset only.

Defaults in ``adapters/meta/training.py`` (rating solver, ridge λ, item-bias prior, ...) were chosen with this script, so
that nothing is tuned on the scored part of the real protocol: with ``--frac 0.5`` θ0 is meta-trained on the first
25 % of ML-100K and the next 25 % are scored. One JSON line per run on stdout (and appended to ``--log``).

    .venv/bin/python -m stream.bench.tools.validate_mf --solver ridge --lam 8 --sum          # the mf defaults
    .venv/bin/python -m stream.bench.tools.validate_mf --solver gd                           # the previous rating path
"""
from __future__ import annotations

import argparse, json, time
from dataclasses import replace

import torch

from adapters.data.datasets import load_dataset
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
from adapters.meta.training import TrainConfig, train
from adapters.online.learner import OnlineConfig, OnlineLearner
from adapters.evaluation.baselines import LearnerModel, RiverBiasedMF


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--solver", default="gd"); ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--meta", default="maml"); ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--item-rating-lr", type=float, default=None); ap.add_argument("--river", action="store_true")
    ap.add_argument("--serve-lams", default="")  # extra λ at serving only (same θ0)
    ap.add_argument("--rating-weight", type=float, default=None); ap.add_argument("--sum", action="store_true")
    ap.add_argument("--frac", type=float, default=0.5); ap.add_argument("--priors", default=""); ap.add_argument("--rating-dim", type=int, default=None)
    ap.add_argument("--log", default=None, help="also append the JSON line to this file")
    ap.add_argument("--dataset", default="ml-100k"); ap.add_argument("--epochs", type=int, default=5); ap.add_argument("--pretrain-epochs", type=int, default=4)
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    part = ds.slice(0, int(len(ds) * a.frac))
    cfg = PrequentialConfig(history=0.5, batch_size=256, batch_seconds=1.0)
    stream = EventStream.from_dataset(part, history=0.5, positive_threshold=cfg.positive_threshold)
    torch.manual_seed(0)
    t0 = time.time()
    mc = {} if a.rating_weight is None else {"rating_weight": a.rating_weight}
    if a.rating_dim: mc["rating_dim"] = a.rating_dim
    ck = train(part, TrainConfig(model="mf", meta=a.meta, history=0.5, rating_solver=a.solver, ridge_lambda=a.lam, ridge_mean=not a.sum,
                                 model_config=mc, epochs=a.epochs, pretrain_epochs=a.pretrain_epochs))
    tt = time.time() - t0
    online = OnlineConfig(window=a.window, item_rating_lr=a.item_rating_lr)
    models = [LearnerModel(stream, OnlineLearner(ck, online), "metarec")]
    import copy
    for lam in [float(x) for x in a.serve_lams.split(",") if x]:
        ck2 = copy.copy(ck); ad = copy.deepcopy(ck.adapter); ad.inner = replace(ad.inner, ridge_lambda=lam)
        ck2.adapter = ad
        models.append(LearnerModel(stream, OnlineLearner(ck2, online), f"serve_lam={lam}"))
    for pr in [float(x) for x in a.priors.split(",") if x]:
        lm = LearnerModel(stream, OnlineLearner(ck, online), f"prior={pr}")
        lm.learner.freshness.config = replace(lm.learner.freshness.config, rating_prior=pr)
        models.append(lm)
    if a.river:
        models.append(RiverBiasedMF(stream))
    res = run_protocol(stream, models, cfg, progress=False)
    out = {"args": vars(a), "train_s": round(tt, 1), "run_s": round(time.time() - t0 - tt, 1), "models": res.summary()}
    print(json.dumps(out))
    if a.log:
        with open(a.log, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()

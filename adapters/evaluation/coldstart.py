"""The MeLU cold-start protocol (Lee et al., KDD 2019): new users with a handful of ratings.

Users with 13–100 rated events are eligible; a seeded 20% of them are *new users*. For each new user, 10
random rated events are the query and the rest the support. θ0 is trained on every other user. On the same
splits, in the same run:

* ``metarec``       — the meta-learned θ0 adapted on the support by the inner loop;
* ``no_adaptation`` — θ0 alone;
* ``erm_finetune``  — the same architecture trained by plain ERM (no inner loop in training), then the same
  inner-loop steps on the support;
* ``global_mean``   — the mean training rating.

Metrics over the query items: ``mae``, ``rmse`` (pooled over all query events), ``ndcg@1``, ``ndcg@3`` (query
items ranked by predicted rating, gain = true rating, averaged over users). The settings are a
:class:`~adapters.evaluation.config.ColdStartConfig`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from adapters.base import Adapter, SupportBatch
from adapters.meta.checkpoint import Checkpoint, training_fingerprint
from adapters.errors import MetarecError
from adapters.evaluation.config import ColdStartConfig
from adapters.evaluation.metrics import mae, mean_ndcg_at_k, rmse
from adapters.meta.training import TrainConfig, train

log = logging.getLogger(__name__)


def part_label(seed: int, cfg: ColdStartConfig | None = None) -> str:
    """Names the training part of the cold-start split (goes into the checkpoint fingerprint)."""
    c = cfg or ColdStartConfig(seed=seed)
    return f"coldstart(seed={seed},ratings={c.min_ratings}-{c.max_ratings},test={c.test_fraction})"


def split_users(ds: Any, cfg: ColdStartConfig) -> tuple[list[str], set[str]]:
    """(new users in a seeded order, their set). Only rated events count."""
    rated = ~np.isnan(ds.ratings)
    uids, counts = np.unique(ds.user_ids[rated].astype(str), return_counts=True)
    eligible = uids[(counts >= cfg.min_ratings) & (counts <= cfg.max_ratings)]
    if len(eligible) < 2:
        raise MetarecError(f"cold-start protocol needs users with {cfg.min_ratings}-{cfg.max_ratings} ratings; "
                           f"{ds.name} has {len(eligible)}")
    rng = np.random.default_rng(cfg.seed)
    n_test = max(1, int(round(cfg.test_fraction * len(eligible))))
    test = [str(u) for u in rng.permutation(eligible)[:n_test]]
    return test, set(test)


def training_part(ds: Any, test: set[str]) -> Any:
    """The events of every user not held out (explicit ratings only)."""
    keep = ~np.isin(ds.user_ids.astype(str), np.array(sorted(test), dtype=str)) & ~np.isnan(ds.ratings)
    return replace(ds, user_ids=ds.user_ids[keep], item_ids=ds.item_ids[keep], ratings=ds.ratings[keep],
                   timestamps=ds.timestamps[keep])


@dataclass
class Split:
    users: torch.Tensor  #: user-feature rows [U]
    support: SupportBatch
    query_items: torch.Tensor  #: [U, Q]
    query_ratings: np.ndarray  #: [U, Q]


def make_split(ds: Any, test_users: list[str], ck: Checkpoint, cfg: ColdStartConfig) -> Split:
    """Support/query sets of the new users under ``ck``'s vocabularies (unknown ids → row 0)."""
    rng = np.random.default_rng(cfg.seed + 1)
    rated = ~np.isnan(ds.ratings)
    uid = ds.user_ids.astype(str)
    s_items, s_rat, q_items, q_rat, users = [], [], [], [], []
    for u in test_users:
        idx = np.flatnonzero((uid == u) & rated)
        perm = rng.permutation(idx)
        q, s = perm[:cfg.query_size], perm[cfg.query_size:]
        rows = [ck.item_index.get(i, 0) for i in ds.item_ids[perm].tolist()]
        q_items.append(rows[:cfg.query_size])
        s_items.append(rows[cfg.query_size:])
        q_rat.append(ds.ratings[q])
        s_rat.append(ds.ratings[s])
        users.append(ck.user_index.get(u, 0))
    support = SupportBatch.from_lists(s_items, s_rat, users)
    return Split(torch.tensor(users), support, torch.tensor(q_items), np.array(q_rat, dtype=np.float64))


def predict_split(adapter: Adapter, split: Split, steps: int | None, adapt: bool, batch: int = 256) -> np.ndarray:
    """Predicted ratings of the query items, after ``steps`` inner steps on the support when ``adapt``."""
    out = []
    for s in range(0, len(split.users), batch):
        sl = slice(s, s + batch)
        sup = split.support.select(sl)
        states = adapter.init_states(sup.users).detach()
        if adapt:
            states = adapter.adapt(states, sup, steps=steps)
        out.append(adapter.predict(states, sup.users, split.query_items[sl]).numpy())
    return np.concatenate(out).astype(np.float64)


def scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    return {"mae": mae(pred, true), "rmse": rmse(pred, true), "ndcg@1": mean_ndcg_at_k(pred, true, 1),
            "ndcg@3": mean_ndcg_at_k(pred, true, 3)}


def _train(part: Any, ds: Any, cfg: ColdStartConfig, meta: str, label: str) -> Checkpoint:
    tc = TrainConfig(model=cfg.model, meta=meta, epochs=cfg.epochs, seed=cfg.seed, split="random",
                     query_size=cfg.query_size, window=cfg.max_ratings, batch_users=cfg.batch_users,
                     inner_lr=cfg.inner_lr, part=label, dataset_spec=cfg.dataset_spec or ds.name)
    ck = train(part, tc)
    ck.fingerprint = training_fingerprint(ds.fingerprint, 1.0, label)
    return ck


def run_coldstart(ds: Any, cfg: ColdStartConfig, checkpoint: Checkpoint | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Run the protocol; returns the JSON report (``{"protocol", "dataset", "events", "models", ...}``)."""
    t0 = time.perf_counter()
    test_list, test = split_users(ds, cfg)
    part = training_part(ds, test)
    label = part_label(cfg.seed, cfg)
    expected = training_fingerprint(ds.fingerprint, 1.0, label)
    if checkpoint is not None:
        if checkpoint.fingerprint != expected:
            raise MetarecError("the checkpoint was not trained on this cold-start training part "
                               f"(train it with `metarec train --dataset {cfg.dataset_spec or ds.name} "
                               f"--coldstart-part --seed {cfg.seed}`)")
        ck = checkpoint
    else:
        log.info("training θ0 (%s/%s) on %d events of %d users", cfg.model, cfg.meta, len(part),
                 len(set(part.user_ids.tolist())))
        ck = _train(part, ds, cfg, cfg.meta, label)
    t_meta = time.perf_counter() - t0
    erm = _train(part, ds, replace(cfg, model=ck.model), "erm", label)
    split = make_split(ds, test_list, ck, cfg)
    erm_split = make_split(ds, test_list, erm, cfg) if erm.item_ids != ck.item_ids else split
    true = split.query_ratings
    models = {
        "metarec": scores(predict_split(ck.adapter, split, cfg.steps, adapt=True), true),
        "no_adaptation": scores(predict_split(ck.adapter, split, cfg.steps, adapt=False), true),
        "erm_finetune": scores(predict_split(erm.adapter, erm_split, cfg.steps, adapt=True), true),
        "global_mean": scores(np.full_like(true, float(np.nanmean(part.ratings))), true),
    }
    return {"protocol": "coldstart", "dataset": cfg.dataset_spec or ds.name, "events": int(len(ds)),
            "models": models,
            "details": {"model": ck.model, "meta": ck.meta, "checkpoint_version": ck.version,
                        "new_users": len(test_list), "train_events": int(len(part)),
                        "query_events": int(true.size), "seed": cfg.seed,
                        "steps": cfg.steps if cfg.steps is not None else ck.adapter.inner.steps,
                        "meta_train_seconds": round(t_meta, 2),
                        "seconds": round(time.perf_counter() - t0, 2)}}

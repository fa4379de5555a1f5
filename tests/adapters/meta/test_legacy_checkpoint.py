"""Checkpoints written while the model carried the inner rates and the prior (``log_lr``, ``log_lr_steps``,
``log_prior_prec`` at the top level of ``weights.safetensors``) still load, give those tensors to their new owners
(``adaptation.rates`` / ``adaptation.prior``) and serve exactly as the same checkpoint in the current layout."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from online_events import interactions, run_batches
from safetensors.torch import load_file, save_file
from synthetic_data import synthetic_dataset

from adapters.errors import MetarecError
from adapters.meta.checkpoint import Checkpoint
from adapters.meta.rates import LEGACY_KEYS
from adapters.meta.training import TrainConfig, train
from adapters.online.learner import OnlineConfig, OnlineLearner

CASES = [("seq", "metasgd", "gradient"), ("mf", "mamlpp", "gradient"), ("seq", "maml", "bayes"),
         ("melu", "fomaml", "gradient")]
SMALL = {"seq": {"dim": 8, "rating_dim": 4}, "mf": {"dim": 8, "rating_dim": 4},
         "melu": {"emb_dim": 4, "hidden": 8, "n_negatives": 8}}


@functools.lru_cache(maxsize=None)
def _trained(model: str, meta: str, task_learner: str) -> Checkpoint:
    return train(synthetic_dataset(n_users=30, n_items=40, seed=3),
                 TrainConfig(model=model, meta=meta, epochs=1, pretrain_epochs=1, seed=0, batch_users=8,
                             model_config=SMALL[model], task_learner=task_learner))


def _as_legacy(directory) -> dict[str, torch.Tensor]:
    """Rewrite the checkpoint in ``directory`` in the old layout: the rates and the prior at the top level."""
    path = directory / "weights.safetensors"
    weights = load_file(str(path))
    old = {k: v for k, v in weights.items() if not k.startswith(("rates.", "prior."))}
    old.update({legacy: weights[new] for legacy, new in LEGACY_KEYS.items() if new in weights})
    save_file(old, str(path), metadata={"version": "legacy"})
    return old


def _served(ck: Checkpoint) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    learner = OnlineLearner(ck, OnlineConfig(top_k=5))
    records, lists = run_batches(learner, interactions(synthetic_dataset(n_users=30, n_items=40, seed=3), 200))
    return {u: r.state for u, r in records.items() if r.state is not None}, {u: r.items for u, r in lists.items()}


@pytest.mark.parametrize("model,meta,task_learner", CASES)
def test_an_old_layout_checkpoint_loads_and_serves_identically(model, meta, task_learner, tmp_path):
    ck = _trained(model, meta, task_learner)
    current = Checkpoint.load(ck.save(tmp_path / "current"))
    old = _as_legacy(ck.save(tmp_path / "legacy"))
    assert "log_lr" in old and not any(k.startswith("rates.") for k in old)
    assert ("log_lr_steps" in old) == (meta == "mamlpp") and ("log_prior_prec" in old) == (task_learner == "bayes")
    legacy = Checkpoint.load(tmp_path / "legacy")
    assert legacy.weights().keys() == current.weights().keys()
    for name, tensor in current.weights().items():
        assert torch.equal(legacy.weights()[name], tensor), name
    assert torch.equal(legacy.adapter.inner_lr(), ck.adapter.inner_lr())  # the learned rates reach serving
    if task_learner == "bayes":
        assert torch.equal(legacy.adapter.adaptation.prior.log_prior_prec, ck.adapter.adaptation.prior.log_prior_prec)
    (states_now, lists_now), (states_old, lists_old) = _served(current), _served(legacy)
    assert lists_old == lists_now and states_old.keys() == states_now.keys()
    for user, state in states_now.items():
        assert np.array_equal(states_old[user], state), user


def test_a_checkpoint_with_a_tensor_nobody_owns_is_refused(tmp_path):
    ck = _trained("mf", "mamlpp", "gradient")
    d = ck.save(tmp_path / "ck")
    weights = load_file(str(d / "weights.safetensors"))
    weights["rates.log_lr_extra"] = torch.zeros(3)
    save_file(weights, str(d / "weights.safetensors"))
    with pytest.raises(MetarecError, match="weights do not match its configuration"):
        Checkpoint.load(d)

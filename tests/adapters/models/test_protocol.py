"""Every model implements the whole :class:`~adapters.base.Adapter` protocol: callers never ask a model what it has."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from adapters.base import Adapter, SupportBatch
from adapters.meta.rates import Adaptation, InnerRates
from adapters.models import MODEL_NAMES, AdapterModule, FeatureTables, build_model

CONFIGS = {"seq": {"dim": 4, "rating_dim": 2}, "mf": {"dim": 4, "rating_dim": 2},
           "melu": {"emb_dim": 4, "hidden": 8, "n_negatives": 4}}
SB = SupportBatch.from_lists([[1, 2, 3], [], [4]], [[5.0, float("nan"), 3.0], [], [2.0]], users=[0, 0, 0])


def _members() -> list[str]:
    """Every member the protocol declares: its attributes and its methods."""
    own = {n for n in vars(Adapter) if not n.startswith("_")}
    return sorted(own | set(getattr(Adapter, "__annotations__", {})))


def _model(name: str) -> AdapterModule:
    return build_model(name, 8, FeatureTables.empty(8), CONFIGS[name])


def test_the_protocol_lists_what_callers_use():
    members = _members()
    for name in ("rating_block", "ITEM_TABLES", "adaptation", "prepare_states", "pretrain_loss", "analytic_grad_fn",
                 "ranking_vectors", "rating_vectors", "window_affinity", "item_tables", "item_row_keys",
                 "item_embeddings", "reseed", "resample_negatives", "finalize", "derived_block"):
        assert name in members, name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_implements_every_member(name):
    m = _model(name)
    assert isinstance(m, Adapter)
    assert not type(m).__abstractmethods__  # nothing left abstract
    for member in _members():
        assert hasattr(m, member), member  # (the one place that asks: the conformance test)
        impl = inspect.getattr_static(type(m), member, None)
        assert impl is None or impl is not inspect.getattr_static(Adapter, member, None), member  # not the stub


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_defaults_and_implementations_answer_with_values(name):
    m = _model(name)
    s = m.prepare_states(m.init_states(SB.users).detach(), SB)
    closed_form = name != "melu"
    assert (m.rating_block is not None) == closed_form
    assert (m.analytic_grad_fn(SB) is not None) == closed_form
    assert (m.analytic_grad(s, SB) is not None) == closed_form
    assert (m.rating_design(SB) is not None) == closed_form
    assert (m.ranking_vectors(s) is not None) == closed_form and (m.rating_vectors(s) is not None) == closed_form
    assert (m.window_affinity(s, SB, torch.tensor([[1, 2]] * 3)) is not None) == (name == "seq")
    assert (m.derived_block is not None) == (name == "seq")
    assert len(m.item_tables()) == len(m.ITEM_TABLES) and bool(m.ITEM_TABLES) == closed_form
    assert m.item_row_keys() == (("id_emb.weight",) if name == "melu" else m.ITEM_TABLES)
    assert m.item_embeddings().shape[0] == m.n_items
    assert torch.equal(m.pretrain_loss(s, SB), m.batch_loss(s, SB)) or name == "seq"
    m.reseed(1)
    m.resample_negatives(np.random.default_rng(0))
    m.finalize()
    assert torch.equal(m.decode_state(m.encode_state(s[0])), s[0])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_inner_rates_are_not_the_model_s(name):
    m = _model(name)
    keys = set(m.state_dict())
    assert not keys & {"log_lr", "log_lr_steps", "log_prior_prec"}
    assert not any(k.startswith(("rates.", "prior.")) for k in keys)
    assert isinstance(m.adaptation, Adaptation) and isinstance(m.adaptation.rates, InnerRates)
    assert not any(p is q for p in m.parameters() for q in m.adaptation.rates.parameters())
    torch.testing.assert_close(m.inner_lr(), m.adaptation.rates(), rtol=0, atol=0)

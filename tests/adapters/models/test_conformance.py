"""Every model × meta-learner obeys the Adapter contract (adapters/base.py)."""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from synthetic_data import synthetic_dataset

from adapters.base import Adapter, SupportBatch
from adapters.meta.learners import META_NAMES
from adapters.models import MODEL_NAMES
from adapters.meta.training import TrainConfig, train

SMALL = {"seq": {"dim": 16, "rating_dim": 8}, "mf": {"dim": 16, "rating_dim": 8}, "melu": {"emb_dim": 8, "hidden": 16, "n_negatives": 16},
         # seq with the next-item support task and the content-aware attention
         "seq-next": {"dim": 16, "rating_dim": 8, "support": "next", "next_positions": 3, "attention": "content"}}
PAIRS = list(itertools.product([*MODEL_NAMES, "seq-next"], META_NAMES))


def _config(model: str, meta: str, seed: int = 0) -> TrainConfig:
    return TrainConfig(model=model.split("-")[0], meta=meta, epochs=1, seed=seed, batch_users=16, pretrain_epochs=1,
                       model_config=SMALL[model])


@functools.lru_cache(maxsize=None)
def trained(model: str, meta: str, seed: int = 0):
    return train(synthetic_dataset(), _config(model, meta, seed))


def support_batch(ck, n: int = 12, seed: int = 1) -> SupportBatch:
    """Ragged supports of ``n`` users (user 3 empty, user 5 unknown with unknown items)."""
    rng = np.random.default_rng(seed)
    items, ratings, users = [], [], []
    for k in range(n):
        length = 0 if k == 3 else int(rng.integers(1, 10))
        items.append(rng.integers(1, ck.adapter.n_items, length).tolist())
        ratings.append([float("nan") if rng.random() < 0.2 else float(rng.integers(1, 6)) for _ in range(length)])
        users.append(int(rng.integers(1, len(ck.user_ids))))
    items[5], ratings[5] = [0, 0, 2], [4.0, float("nan"), 3.0]
    users[5] = 0
    return SupportBatch.from_lists(items, ratings, users)


@pytest.mark.parametrize("model,meta", PAIRS)
def test_is_an_adapter(model, meta):
    ck = trained(model, meta)
    assert isinstance(ck.adapter, Adapter)
    assert ck.adapter.name == model.split("-")[0] and ck.meta == meta
    assert ck.adapter.n_items == len(ck.item_ids)


@pytest.mark.parametrize("model,meta", PAIRS)
def test_batched_adapt_equals_per_user_loop(model, meta):
    a = trained(model, meta).adapter
    sb = support_batch(trained(model, meta))
    s0 = a.init_states(sb.users).detach()
    batched = a.adapt(s0, sb, steps=3, prox=0.1)
    for k in range(sb.batch_size):
        one = sb.select(slice(k, k + 1))
        length = int(one.mask.sum())
        trimmed = SupportBatch(one.items[:, :max(length, 1)], one.ratings[:, :max(length, 1)],
                               one.mask[:, :max(length, 1)], one.rated[:, :max(length, 1)], one.users)
        single = a.adapt(s0[k:k + 1], trimmed, steps=3, prox=0.1)
        torch.testing.assert_close(batched[k:k + 1], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model,meta", PAIRS)
def test_same_seed_same_training_and_adaptation(model, meta):
    a = trained(model, meta).adapter
    b = train(synthetic_dataset(), _config(model, meta)).adapter
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    sb = support_batch(trained(model, meta))
    s0 = a.init_states(sb.users).detach()
    assert torch.equal(a.adapt(s0, sb), b.adapt(s0, sb))
    other = trained(model, meta, seed=7).adapter
    assert not torch.equal(a.init_states(sb.users), other.init_states(sb.users)) or \
        not torch.equal(a.score(s0, sb.users), other.score(s0, sb.users))


@pytest.mark.parametrize("model,meta", PAIRS)
def test_state_round_trips_through_bytes(model, meta):
    a = trained(model, meta).adapter
    sb = support_batch(trained(model, meta))
    states = a.adapt(a.init_states(sb.users).detach(), sb)
    for s in states:
        data = a.encode_state(s)
        assert isinstance(data, bytes) and len(data) == 4 * a.state_dim
        back = a.decode_state(data)
        assert back.dtype == torch.float32 and torch.equal(back, s)


@pytest.mark.parametrize("model,meta", PAIRS)
def test_adaptation_lowers_support_loss(model, meta):
    a = trained(model, meta).adapter
    sb = support_batch(trained(model, meta))
    s0 = a.init_states(sb.users).detach()
    before = a.support_loss(s0, sb)
    after = a.support_loss(a.adapt(s0, sb, steps=3, prox=0.0), sb)
    has = sb.mask.any(1)
    assert float(after[has].mean()) < float(before[has].mean())
    assert int((after[has] < before[has]).sum()) >= int(has.sum()) - 1


@pytest.mark.parametrize("model,meta", PAIRS)
def test_scores_finite_for_new_users_and_new_items(model, meta):
    a = trained(model, meta).adapter
    users = torch.tensor([0, 1])
    s = a.init_states(users).detach()
    full = a.score(s, users)
    assert full.shape == (2, a.n_items) and torch.isfinite(full).all()
    cand = torch.tensor([[0, 1, 2], [0, 0, 3]])
    assert torch.isfinite(a.score(s, users, cand)).all()
    pred = a.predict(s, users, cand)
    assert torch.isfinite(pred).all()
    assert (pred >= a.rating_min).all() and (pred <= a.rating_max).all()
    torch.testing.assert_close(a.score(s, users, cand), full.gather(1, cand))


@pytest.mark.parametrize("model,meta", PAIRS)
def test_warm_start_and_empty_support(model, meta):
    a = trained(model, meta).adapter
    sb = support_batch(trained(model, meta))
    s0 = a.init_states(sb.users).detach()
    s1 = a.adapt(s0, sb)
    assert torch.equal(s1[3], s0[3])  # empty support keeps the state
    s2 = a.adapt(s1, sb)  # warm start from the previous state
    has = sb.mask.any(1)
    assert not torch.equal(s2[has], s1[has])
    assert float(a.loss(s2, sb)[has].mean()) < float(a.loss(s1, sb)[has].mean())
    decoded = torch.stack([a.decode_state(a.encode_state(s)) for s in s1])
    assert torch.equal(a.adapt(decoded, sb), s2)
    empty = SupportBatch.from_lists([[], []], [[], []], [1, 0])
    warm = s1[:2].clone()
    assert torch.equal(a.adapt(warm, empty, steps=5, prox=1.0), warm)


@pytest.mark.parametrize("model,meta", PAIRS)
def test_adapt_does_not_mutate_inputs(model, meta):
    a = trained(model, meta).adapter
    sb = support_batch(trained(model, meta))
    s0 = a.init_states(sb.users).detach().clone()
    copy = s0.clone()
    a.adapt(s0, sb)
    assert torch.equal(s0, copy)


def test_mf_state_fits_in_one_kilobyte():
    a = trained("mf", "fomaml").adapter
    assert len(a.encode_state(a.init_states(torch.tensor([0]))[0])) <= 1024
    from adapters.models import FeatureTables, build_model
    default = build_model("mf", 10, FeatureTables.empty(10))
    assert len(default.encode_state(default.init_states(torch.tensor([0]))[0])) <= 1024


def test_decode_rejects_wrong_length():
    from adapters.errors import MetarecError
    a = trained("mf", "fomaml").adapter
    with pytest.raises(MetarecError):
        a.decode_state(b"\x00" * 7)

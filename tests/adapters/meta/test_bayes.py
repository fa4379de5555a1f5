"""The Bayesian task learner (adapters/meta/bayes.py, adapters/online/tasklearner.py): its maths against plain
autograd and the ridge solver, and the conformance points every task learner obeys (batched == per-user loop,
deterministic under a seed, states round-trip through bytes), over every model that supports it × meta-learner."""
from __future__ import annotations

import copy
import functools
import itertools
import math

import numpy as np
import pytest
import torch
from synthetic_data import synthetic_dataset

from adapters.base import SupportBatch
from adapters.errors import MetarecError
from adapters.meta import bayes
from adapters.meta.inner import solve_rating_block
from adapters.meta.learners import META_NAMES, build_meta_learner
from adapters.meta.training import TrainConfig, train
from adapters.models import FeatureTables, build_model
from adapters.online.records import UserRecord
from adapters.online.tasklearner import TaskLearner

MODELS = ("seq", "mf")
#: metasgd learns per-parameter inner rates, which one Newton step does not have: refused with bayes (below)
PAIRS = [(model, meta) for model, meta in itertools.product(MODELS, META_NAMES) if meta != "metasgd"]
SMALL = {"dim": 16, "rating_dim": 8}


@functools.lru_cache(maxsize=None)
def trained(model: str, meta: str, seed: int = 0, task_learner: str = "bayes"):
    return train(synthetic_dataset(), TrainConfig(model=model, meta=meta, epochs=1, seed=seed, batch_users=16,
                                                  pretrain_epochs=1, model_config=SMALL, task_learner=task_learner))


def supports(ck, n: int = 10, seed: int = 1) -> SupportBatch:
    """Ragged windows of ``n`` users (user 3 empty, user 5 unknown with an unknown item, some unrated events)."""
    rng = np.random.default_rng(seed)
    items, ratings, users = [], [], []
    for k in range(n):
        length = 0 if k == 3 else int(rng.integers(1, 12))
        items.append(rng.integers(1, ck.adapter.n_items, length).tolist())
        ratings.append([math.nan if rng.random() < 0.2 else float(rng.integers(1, 6)) for _ in range(length)])
        users.append(int(rng.integers(1, len(ck.user_ids))))
    items[5], ratings[5], users[5] = [0, 2, 3], [4.0, math.nan, 3.0], 0
    return SupportBatch.from_lists(items, ratings, users)


# ---- the maths ----------------------------------------------------------------------------------------------
class RankingCase:
    """A trained ``model``'s adapted, prepared states ``s`` on ``supports`` without their ratings (the ranking loss
    alone), with the ranking block's ``entries``."""

    def __init__(self, model: str) -> None:
        ck = trained(model, "fomaml")
        self.a, sb = ck.adapter, supports(ck)
        s = bayes.split(self.a, bayes.adapt(self.a, bayes.init_states(self.a, sb.users), sb))[0].detach()
        self.s = self.a.prepare_states(s, sb)
        self.rank_only = SupportBatch(sb.items, sb.ratings, sb.mask, torch.zeros_like(sb.rated), sb.users)
        self.entries = list(range(self.a.config.dim)) + ([self.a.gain_index] if model == "seq" else [])

    def user(self, k: int) -> SupportBatch:
        return self.rank_only.select(slice(k, k + 1))

    def state(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """``[1, state_dim]``: user ``k``'s state with the ranking block set to ``x`` (differentiable in ``x``)."""
        full = self.s[k:k + 1].clone()
        full[0, self.entries] = x
        return full

    def loss(self, k: int):
        """User ``k``'s ranking loss as a function of its ranking block."""
        return lambda x: self.a.batch_loss(self.state(k, x), self.user(k))[0]

    def block(self, k: int) -> torch.Tensor:
        return self.s[k, self.entries].clone()


@pytest.mark.parametrize("model", MODELS)
def test_ranking_gradient_and_hessian_are_autograd_s(model):
    case = RankingCase(model)
    g, h = bayes._ranking_grad_hessian(case.a, case.s, supports(trained(model, "fomaml")))
    for k in (0, 1, 5):
        exact = torch.autograd.functional.hessian(case.loss(k), case.block(k)).diagonal()
        assert torch.allclose(h[k, case.entries], exact, atol=1e-5, rtol=1e-3)
        grad = torch.autograd.functional.jacobian(case.loss(k), case.block(k))
        assert torch.allclose(g[k, case.entries], grad, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_the_differentiable_ranking_gradient_carries_the_full_hessian(model):
    """Second-order meta-training differentiates the Newton step through ∇L: its derivative must be ∇²L (the full
    matrix, not only the diagonal the step divides by)."""
    case = RankingCase(model)
    v = torch.randn(len(case.entries), generator=torch.Generator().manual_seed(0))
    for k in (0, 1, 5):
        x = case.block(k).requires_grad_(True)
        full = case.state(k, x)
        g, h = bayes._ranking_grad_hessian(case.a, full, case.user(k), differentiable=True)
        g0, h0 = bayes._ranking_grad_hessian(case.a, full, case.user(k))
        assert torch.allclose(g, g0) and torch.allclose(h, h0) and not g0.requires_grad
        (hv,) = torch.autograd.grad((g[0, case.entries] * v).sum(), x)
        exact = torch.autograd.functional.hvp(case.loss(k), case.block(k), v)[1]
        assert torch.allclose(hv, exact, atol=1e-5, rtol=1e-3)


def test_maml_meta_gradients_reach_the_item_tables_through_the_newton_step_and_fomaml_s_do_not():
    ck = trained("seq", "fomaml")
    a, sb = copy.deepcopy(ck.adapter), supports(ck)
    a.requires_grad_(True)
    query = supports(ck, seed=2)
    query = SupportBatch(query.items, query.ratings, query.mask, query.rated, sb.users)
    grads = {}
    for meta in ("maml", "fomaml"):
        a.zero_grad()
        learner = build_meta_learner(meta, a)
        learner.prior.load_state_dict(ck.adapter.adaptation.prior.state_dict())  # the trained Λ0
        learner.objective(a, sb, query).backward()
        grads[meta] = a.item_emb.grad.clone()
    assert not torch.allclose(grads["maml"], grads["fomaml"])


def test_the_rating_block_is_the_ridge_solution_with_half_the_prior_precision():
    ck = trained("mf", "fomaml", task_learner="gradient")  # no meta-learned prior: Λ0 = 2·(prox | ridge λ)
    a, sb = ck.adapter, supports(ck)
    s0 = bayes.init_states(a, sb.users)
    theta0 = a.init_states(sb.users)
    blk = a.rating_block
    rated = (sb.mask & sb.rated).any(1)
    posterior = bayes.split(a, bayes.adapt(a, s0, sb))[0]
    ridge = solve_rating_block(a, theta0, sb, theta0, a.inner.ridge_lambda, mean=a.inner.ridge_mean)
    assert torch.allclose(posterior[rated][:, blk], ridge[rated][:, blk], atol=1e-5)
    assert torch.equal(posterior[~rated][:, blk], theta0[~rated][:, blk])  # no rating: the prior mean
    assert s0.shape[1] == a.state_dim + len(bayes.posterior_entries(a))


@pytest.mark.parametrize("model", MODELS)
def test_the_newton_step_lowers_the_posterior_objective_and_data_adds_precision(model):
    ck = trained(model, "fomaml")
    a, full = ck.adapter, supports(ck)
    sb = SupportBatch(full.items, full.ratings, full.mask, torch.zeros_like(full.rated), full.users)  # ranking only
    s0 = bayes.init_states(a, sb.users)
    s1 = bayes.adapt(a, s0, sb).detach()
    prior, theta0, e = bayes.prior_precision(a), a.init_states(sb.users), bayes.posterior_entries(a)

    def objective(states: torch.Tensor) -> torch.Tensor:  # −log posterior up to a constant
        m = bayes.split(a, states)[0]
        m = a.prepare_states(m, sb)
        return a.batch_loss(m, sb) + 0.5 * (prior[e] * (m[:, e] - theta0[:, e]) ** 2).sum(1)

    active = sb.mask.any(1)
    before, after = objective(s0)[active], objective(s1)[active]
    assert bool((after < before).all())
    p0, p1 = bayes.split(a, s0)[1], bayes.split(a, s1)[1]
    assert bool((p1 >= p0 - 1e-6).all()) and bool((p1[active] > p0[active]).any())
    assert torch.equal(s1[3], s0[3])  # an empty window changes nothing


def test_meta_training_learns_the_prior_precision():
    ck = trained("seq", "fomaml")
    default = bayes.default_prior_precision(ck.adapter)
    learned = bayes.prior_precision(ck.adapter)
    assert ck.adapter.inner.task_learner == "bayes"
    assert not torch.allclose(learned, default)  # it moved with the meta-gradient


def test_the_bayes_task_learner_refuses_a_model_without_a_closed_form_rating_block():
    ck = train(synthetic_dataset(), TrainConfig(model="melu", meta="fomaml", epochs=1, batch_users=16,
                                                model_config={"emb_dim": 8, "hidden": 16, "n_negatives": 16}))
    with pytest.raises(MetarecError, match="closed-form rating block"):
        TaskLearner(ck.adapter, "bayes")
    with pytest.raises(MetarecError, match="needs --task-learner bayes"):
        TaskLearner(ck.adapter, "gradient", explore="thompson")


@pytest.mark.parametrize("model", MODELS)
def test_metasgd_is_refused_with_the_bayes_task_learner(model):
    """One Newton step has no inner rates for Meta-SGD to learn: refused, not silently trained as maml."""
    with pytest.raises(MetarecError, match="^metasgd learns per-parameter inner rates; the bayes task learner takes "
                                           "one Newton step and has none to learn: use maml$"):
        trained(model, "metasgd")
    a = build_model(model, 6, FeatureTables.empty(6), SMALL, {"task_learner": "bayes", "rating_solver": "ridge"})
    with pytest.raises(MetarecError, match="use maml"):
        build_meta_learner("metasgd", a)


# ---- conformance: every task learner over every model × meta-learner ---------------------------------------
@pytest.mark.parametrize("model,meta", PAIRS)
def test_batched_update_equals_per_user_loop(model, meta):
    ck = trained(model, meta)
    tl, sb = TaskLearner(ck.adapter, "bayes"), supports(ck)
    s0 = tl.init_states(sb.users)
    batched = tl.adapt(s0, sb, steps=1, prox=None)
    for k in range(sb.batch_size):
        one = tl.adapt(s0[k:k + 1], sb.select(slice(k, k + 1)), steps=1, prox=None)
        assert torch.allclose(batched[k], one[0], atol=1e-5), k


@pytest.mark.parametrize("model,meta", PAIRS)
def test_same_seed_same_training_and_update(model, meta):
    a, b = trained(model, meta, seed=3), train(synthetic_dataset(), TrainConfig(
        model=model, meta=meta, epochs=1, seed=3, batch_users=16, pretrain_epochs=1, model_config=SMALL,
        task_learner="bayes"))
    assert a.weights().keys() == b.weights().keys() and "prior.log_prior_prec" in a.weights()
    for (name, p), (_, q) in zip(a.weights().items(), b.weights().items()):  # the model's and the prior's
        assert torch.equal(p, q), name
    sb = supports(a)
    ta, tb = TaskLearner(a.adapter, "bayes", "thompson", seed=7), TaskLearner(b.adapter, "bayes", "thompson", seed=7)
    sa, sb_ = ta.adapt(ta.init_states(sb.users), sb, 1, None), tb.adapt(tb.init_states(sb.users), sb, 1, None)
    assert torch.equal(sa, sb_)
    assert torch.equal(ta.scores(sa, sb.users), tb.scores(sb_, sb.users))  # Thompson draws too


@pytest.mark.parametrize("model,meta", PAIRS)
def test_states_round_trip_through_records(model, meta):
    ck = trained(model, meta)
    tl, sb = TaskLearner(ck.adapter, "bayes"), supports(ck)
    s = tl.adapt(tl.init_states(sb.users), sb, 1, None)
    rec = UserRecord.empty(ck.adapter.n_items, 1)
    rec.state, rec.model_version = s[0].numpy().copy(), "v"
    back = UserRecord.from_bytes(rec.to_bytes())
    assert np.array_equal(back.state, s[0].numpy()) and back.state.shape == (tl.width,)
    assert 4 * tl.width <= 2048  # the durable state per user stays within 2 KB


# ---- uncertainty and exploration -------------------------------------------------------------------------
def test_score_std_is_the_spread_of_thompson_scores():
    ck = trained("seq", "fomaml")
    tl, sb = TaskLearner(ck.adapter, "bayes", "thompson", scale=1.0, seed=0), supports(ck)
    s = tl.adapt(tl.init_states(sb.users), sb, 1, None)
    draws = torch.stack([tl.scores(s[:2], sb.users[:2]) for _ in range(4000)])
    std = tl.score_std(s[:2])
    assert torch.allclose(draws.std(0)[:, 1:], std[:, 1:], rtol=0.08, atol=1e-3)
    assert torch.allclose(draws.mean(0)[:, 1:], ck.adapter.score(tl.model_states(s[:2]), sb.users[:2])[:, 1:],
                          atol=4 * float(std.max()) / math.sqrt(4000) + 1e-4)


def test_ucb_adds_scale_times_the_std_and_scale_zero_is_no_exploration():
    ck = trained("mf", "fomaml")
    sb = supports(ck)
    none = TaskLearner(ck.adapter, "bayes")
    s = none.adapt(none.init_states(sb.users), sb, 1, None)
    ucb = TaskLearner(ck.adapter, "bayes", "ucb", scale=2.0)
    assert torch.allclose(ucb.scores(s, sb.users), none.scores(s, sb.users) + 2.0 * none.score_std(s))
    zero = TaskLearner(ck.adapter, "bayes", "thompson", scale=0.0)
    assert torch.equal(zero.scores(s, sb.users), none.scores(s, sb.users))
    cand = torch.tensor([[1, 2, 3]] * sb.batch_size)
    assert torch.allclose(ucb.scores(s, sb.users, cand), torch.gather(ucb.scores(s, sb.users), 1, cand))


@pytest.mark.parametrize("model", MODELS)
def test_persistence_is_how_much_of_the_previous_state_a_micro_batch_keeps(model):
    ck = trained(model, "fomaml")
    a = ck.adapter
    first, second = supports(ck, seed=1), supports(ck, seed=2)
    s1 = bayes.adapt(a, bayes.init_states(a, first.users), first, persistence=0.5)
    s2 = SupportBatch(second.items, second.ratings, second.mask, second.rated, first.users)  # same users, new windows
    blk = slice(0, a.config.dim)
    both = first.mask.any(1) & s2.mask.any(1)
    forget = bayes.adapt(a, s1, s2, persistence=0.0)
    assert torch.allclose(forget, bayes.adapt(a, bayes.init_states(a, first.users), s2, persistence=0.0), atol=1e-6)
    keep = bayes.adapt(a, s1, s2, persistence=0.9)
    d_keep = (keep[both, blk] - s1[both, blk]).norm(dim=1)
    d_forget = (forget[both, blk] - s1[both, blk]).norm(dim=1)
    assert float(d_keep.mean()) < float(d_forget.mean()) and float((d_keep < d_forget).float().mean()) >= 0.75
    with pytest.raises(MetarecError, match="persistence"):
        TaskLearner(a, "bayes", persistence=1.0)

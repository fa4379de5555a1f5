"""The fast first-order path of ``mf``'s analytic inner loop (``MFAdapter.analytic_grad_fn``, ``inner_loop(fast=)``)
equals the per-step generic path: states, scores and first-order meta-gradients, for both rating solvers, with and
without the proximal pull, Meta-SGD rate vectors, empty users, padding, unknown items and implicit events."""
from __future__ import annotations

import pytest
import torch

from adapters.base import SupportBatch
from adapters.meta.inner import InnerConfig, inner_loop
from adapters.meta.learners import build_meta_learner
from adapters.models import FeatureTables, build_model

NAN = float("nan")
# user 0: ratings and an implicit event; 1: empty; 2: only implicit; 3: unknown item 0 (rated) + padding;
# 4: a full row of repeated items; 5: only unknown items
SB = SupportBatch.from_lists(
    [[1, 2, 3, 4], [], [5, 6, 7], [0, 8, 2], [9, 9, 10, 11, 12, 13], [0, 0]],
    [[5.0, 3.0, NAN, 2.0], [], [NAN, NAN, NAN], [4.0, 1.0, NAN], [1.0, 2.0, 3.0, 4.0, 5.0, 1.0], [3.0, NAN]],
    users=[1, 2, 0, 3, 4, 5])
QUERY = SupportBatch.from_lists([[2, 3], [4], [1, 8], [7], [13, 1], [6]],
                                [[4.0, NAN], [2.0], [3.0, 5.0], [1.0], [NAN, 2.0], [4.0]], users=[1, 2, 0, 3, 4, 5])


def _tables(n_items: int = 20, n_users: int = 6) -> FeatureTables:
    gen = torch.Generator().manual_seed(1)
    return FeatureTables(torch.zeros(n_items, 0), torch.zeros(n_items, dtype=torch.long),
                         torch.randint(0, 3, (n_users,), generator=gen), torch.randint(0, 2, (n_users,), generator=gen),
                         torch.randint(0, 4, (n_users,), generator=gen))


def _model(solver: str, prox: float, metasgd: bool = False, rank_weight: float = 1.0):
    m = build_model("mf", 20, _tables(), {"dim": 6, "rating_dim": 3, "rank_weight": rank_weight},
                    InnerConfig(lr=0.4, lr_rating=0.05, prox=prox, rating_solver=solver, ridge_lambda=0.7,
                                ridge_mean=False, metasgd=metasgd))
    gen = torch.Generator().manual_seed(2)
    rates = m.adaptation.rates
    with torch.no_grad():  # nothing left at its (zero) initial value: every term of the gradient matters
        for p in [*m.parameters(), *rates.parameters()]:
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
        if metasgd:  # per-parameter rates, all different
            rates.log_lr.copy_(torch.log(torch.rand(m.state_dim, generator=gen) * 0.5 + 0.05))
    return m


def _run(m, fast: bool, states: torch.Tensor | None = None, support: SupportBatch = SB) -> torch.Tensor:
    theta0 = m.init_states(support.users).detach()
    start = theta0 + 0.1 if states is None else states
    return inner_loop(m, start, support, 3, m.inner_lr().detach(), prox=m.inner.prox, theta0=theta0,
                      first_order=True, fast=fast).detach()


@pytest.mark.parametrize("solver", ["gd", "ridge"])
@pytest.mark.parametrize("prox", [0.0, 0.3])
@pytest.mark.parametrize("metasgd", [False, True])
def test_fast_inner_loop_equals_generic(solver, prox, metasgd):
    m = _model(solver, prox, metasgd)
    slow, fast = _run(m, fast=False), _run(m, fast=True)
    assert torch.allclose(fast, slow, atol=1e-5, rtol=1e-5)
    start = m.init_states(SB.users).detach() + 0.1
    moved = (slow - start).abs().max(1).values
    assert moved[1] == 0 and (moved[[0, 2, 3, 4, 5]] > 1e-3).all()  # the check can fail: users did move
    # the served entry point (adapt) takes the fast path and agrees too, scores included
    adapted = m.adapt(start, SB)
    assert torch.allclose(adapted, slow, atol=1e-5, rtol=1e-5)
    assert torch.allclose(m.score(adapted, SB.users), m.score(slow, SB.users), atol=1e-5)


@pytest.mark.parametrize("rank_weight", [1.0, 0.5])
def test_gradient_function_equals_analytic_grad(rank_weight):
    m = _model("gd", 0.0, rank_weight=rank_weight)
    gen = torch.Generator().manual_seed(3)
    states = m.init_states(SB.users).detach() + 0.2 * torch.randn(len(SB.users), m.state_dim, generator=gen)
    ref = m.analytic_grad(states, SB).detach()
    grad = m.analytic_grad_fn(SB)
    assert torch.allclose(grad(states), ref, atol=1e-6)
    assert torch.allclose(grad(states + 0.5), m.analytic_grad(states + 0.5, SB).detach(), atol=1e-6)  # reusable
    no_rating = m.analytic_grad_fn(SB, rating=False)(states)
    blk = m.rating_block
    assert torch.allclose(no_rating[:, :blk.start], ref[:, :blk.start], atol=1e-6)
    assert torch.equal(no_rating[:, blk], torch.zeros_like(ref[:, blk]))
    assert ref[:, blk].abs().max() > 1e-3  # the skipped terms were not zero anyway


def test_gradient_function_handles_a_batch_size_change():
    m = _model("gd", 0.0)
    grad = m.analytic_grad_fn(SB)
    states = m.init_states(SB.users).detach()
    first = grad(states)
    assert torch.allclose(grad(states), first) and grad(states).shape == (6, m.state_dim)


@pytest.mark.parametrize("solver", ["gd", "ridge"])
@pytest.mark.parametrize("meta", ["fomaml", "reptile"])
def test_first_order_meta_gradients_are_unchanged(solver, meta):
    """The fast steps run without autograd; what flows to the meta-parameters (through the start state, the rates
    and the ridge solve) is the same as with the generic steps' detached gradients."""
    grads = []
    for fast in (False, True):
        m = _model(solver, 0.3, metasgd=True)
        if not fast:  # the generic path: make the model look like it has no fast gradient function
            m.analytic_grad_fn = lambda support, rating=True: None
        rates = m.adaptation.rates.state_dict()
        learner = build_meta_learner(meta, m)
        learner.rates.load_state_dict(rates)  # the model's random per-parameter rates, learnable here too
        learner.rates.log_lr.requires_grad_(True)
        learner.objective(m, SB, QUERY).backward()
        named = [*m.named_parameters(), *learner.named_parameters()]
        grads.append({n: p.grad.clone() for n, p in named if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "user0" in grads[0] and "item_rate" in grads[0]
    assert ("rates.log_lr" in grads[0]) == (meta == "fomaml")  # reptile detaches the rates
    for name in grads[0]:
        assert torch.allclose(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4), name


def test_second_order_keeps_the_generic_differentiable_steps():
    """maml differentiates through the steps' gradients: the item embeddings get a meta-gradient from the steps
    (zero if the steps had been taken without autograd, as the fast path does)."""
    m = _model("ridge", 0.3)
    m.item_bias.requires_grad_(False)
    build_meta_learner("maml", m).objective(m, SB, QUERY).backward()
    second = m.item_emb.grad.clone()
    m.zero_grad()
    build_meta_learner("fomaml", m).objective(m, SB, QUERY).backward()
    assert not torch.allclose(second, m.item_emb.grad, atol=1e-6)


def test_bench_builds_the_model_the_trainer_serves(tmp_path):
    from adapters.meta.training import TrainConfig, train
    from stream.bench.adaptation import served_inner
    from synthetic_data import synthetic_dataset

    for name in ("mf", "melu"):
        ck = train(synthetic_dataset(n_users=8, n_items=40), TrainConfig(model=name, epochs=0, pretrain_epochs=0,
                                                                           steps=2))
        assert ck.adapter.inner == served_inner(name, 2)

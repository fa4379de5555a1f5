"""The closed-form (ridge, R2D2-style) rating block of ``mf``: exact, batched, differentiable, persisted."""
from __future__ import annotations

import json

import pytest
import torch

from adapters.base import SupportBatch
from adapters.meta.checkpoint import Checkpoint
from adapters.errors import MetarecError
from adapters.meta.inner import InnerConfig, inner_loop, ridge_block
from adapters.meta.learners import META_NAMES, build_meta_learner
from adapters.models import FeatureTables, build_model

NAN = float("nan")
SB = SupportBatch.from_lists(
    [[1, 2, 3, 4, 5], [6, 7], [8, 9, 1], [2]],
    [[5.0, 3.0, 1.0, 4.0, 2.0], [2.0, NAN], [NAN, NAN, NAN], [4.0]], users=[1, 2, 0, 3])


def _model(lam: float = 0.3, solver: str = "ridge", seed: int = 0):
    m = build_model("mf", n_items=12, tables=FeatureTables.empty(12, n_users=4),
                    config={"dim": 4, "rating_dim": 3},
                    inner={"rating_solver": solver, "ridge_lambda": lam, "prox": 0.2, "lr": 0.3, "lr_rating": 0.02})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.item_rate.copy_(torch.randn(m.item_rate.shape, generator=gen))
        m.item_rate_bias.copy_(0.3 * torch.randn(m.item_rate_bias.shape, generator=gen))
        m.user0.copy_(0.2 * torch.randn(m.user0.shape, generator=gen))
    return m


def _rating_objective_grad(m, states, theta0, lam):
    """Gradient w.r.t. the rating block of the support loss + λ‖s_r − θ0_r‖²."""
    s = states.clone().requires_grad_(True)
    blk = m.rating_block
    total = m.batch_loss(s, SB).sum() + lam * ((s[:, blk] - theta0[:, blk]) ** 2).sum()
    (g,) = torch.autograd.grad(total, s)
    return g[:, blk]


def test_ridge_block_is_the_stationary_point_of_the_rating_objective():
    m = _model(lam=0.3)
    theta0 = m.init_states(SB.users).detach()
    out = m.adapt(theta0 + 0.05, SB)
    g = _rating_objective_grad(m, out, theta0, 0.3)
    rated = (SB.mask & SB.rated).any(1)
    assert rated.tolist() == [True, True, False, True]
    assert g[rated].abs().max() < 1e-5
    # before the solve the gradient was far from zero: the check can fail
    assert _rating_objective_grad(m, theta0 + 0.05, theta0, 0.3)[rated].abs().max() > 1e-2


def test_ridge_equals_many_gradient_steps():
    lam = 0.3
    m = _model(lam=lam)
    theta0 = m.init_states(SB.users).detach()
    solved = m.adapt(theta0, SB)
    lr = torch.zeros(m.state_dim)
    lr[m.rating_block] = 0.05
    gd = inner_loop(m, theta0, SB, steps=4000, lr=lr, prox=lam, theta0=theta0, rating_solver="gd")
    rated = (SB.mask & SB.rated).any(1)
    torch.testing.assert_close(solved[rated][:, m.rating_block], gd[rated][:, m.rating_block], atol=1e-4, rtol=1e-4)


def test_ranking_block_still_takes_its_gradient_steps():
    ridge, gd = _model(solver="ridge"), _model(solver="gd")
    theta0 = ridge.init_states(SB.users).detach()
    a, b = ridge.adapt(theta0, SB), gd.adapt(theta0, SB)
    d = ridge.config.dim
    torch.testing.assert_close(a[:, :d], b[:, :d])
    assert not torch.equal(a[:, :d], theta0[:, :d])


def test_user_without_rated_events_keeps_its_rating_block():
    m = _model()
    warm = m.init_states(SB.users).detach() + 0.7
    out = m.adapt(warm, SB)
    assert torch.equal(out[2, m.rating_block], warm[2, m.rating_block])   # implicit events only
    assert not torch.equal(out[0, m.rating_block], warm[0, m.rating_block])


def test_batched_solve_equals_per_user_solves():
    m = _model()
    theta0 = m.init_states(SB.users).detach()
    batched = m.adapt(theta0 + 0.1, SB)
    for k in range(SB.batch_size):
        one = SB.select(slice(k, k + 1))
        n = max(int(one.mask.sum()), 1)
        trimmed = SupportBatch(one.items[:, :n], one.ratings[:, :n], one.mask[:, :n], one.rated[:, :n], one.users)
        torch.testing.assert_close(batched[k:k + 1], m.adapt(theta0[k:k + 1] + 0.1, trimmed), atol=1e-6, rtol=1e-5)


def test_ridge_block_matches_the_normal_equations():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 6, 3, generator=gen), torch.randn(2, 6, generator=gen)
    w, a = torch.rand(2, 6, generator=gen), torch.randn(2, 3, generator=gen)
    got = ridge_block(x, y, w, a, lam=0.5)
    for b in range(2):
        xw = x[b].t() * w[b]
        want = torch.linalg.solve(xw @ x[b] + 0.5 * torch.eye(3), xw @ y[b] + 0.5 * a[b])
        torch.testing.assert_close(got[b], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("meta", META_NAMES)
def test_meta_gradient_reaches_item_rating_factors_through_the_solve(meta):
    m = _model()
    m.inner = InnerConfig(**{**m.inner.__dict__, "metasgd": meta == "metasgd"})
    query = SupportBatch.from_lists([[3], [4], [5], [6]], [[2.0], [5.0], [1.0], [3.0]], users=SB.users.tolist())
    build_meta_learner(meta, m).objective(m, SB, query, steps=2).backward()
    assert m.item_rate.grad is not None and m.item_rate.grad.abs().sum() > 0
    assert m.user0.grad[m.rating_block].abs().sum() > 0


def test_maml_meta_gradient_through_the_solve_matches_finite_differences():
    m = _model().double()
    query = SupportBatch.from_lists([[3], [4], [5], [6]], [[2.0], [5.0], [1.0], [3.0]], users=SB.users.tolist())
    learner = build_meta_learner("maml", m).double()
    m.zero_grad()
    learner.objective(m, SB, query, steps=1).backward()
    analytic = m.item_rate.grad[1, 0].item()
    eps = 1e-6
    with torch.no_grad():
        m.item_rate[1, 0] += eps
        up = learner.objective(m, SB, query, steps=1).item()
        m.item_rate[1, 0] -= 2 * eps
        down = learner.objective(m, SB, query, steps=1).item()
        m.item_rate[1, 0] += eps
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-8)


def test_bad_solver_settings_are_user_errors():
    with pytest.raises(MetarecError, match="rating solver"):
        InnerConfig(rating_solver="newton")
    with pytest.raises(MetarecError, match="lambda"):
        InnerConfig(rating_solver="ridge", ridge_lambda=0.0)
    with pytest.raises(MetarecError, match="melu"):
        build_model("melu", n_items=5, tables=FeatureTables.empty(5), config={"emb_dim": 4, "hidden": 8},
                    inner={"rating_solver": "ridge"})


def test_checkpoint_round_trip_keeps_the_solver_and_old_checkpoints_stay_gd(tmp_path):
    m = _model(lam=0.7)
    m.requires_grad_(False)
    ck = Checkpoint.from_adapter(m, ["<unk>"] + [str(i) for i in range(1, 12)], "maml",
                                 user_ids=["<unk>", "a", "b", "c"])
    ck.save(tmp_path / "ck")
    back = Checkpoint.load(tmp_path / "ck")
    assert back.adapter.inner.rating_solver == "ridge" and back.adapter.inner.ridge_lambda == 0.7
    theta0 = m.init_states(SB.users)
    torch.testing.assert_close(back.adapter.adapt(theta0, SB), m.adapt(theta0, SB))
    # a checkpoint written before the option existed has no such keys: it loads with the gradient steps
    cfg_path = tmp_path / "ck" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("rating_solver", "ridge_lambda"):
        del cfg["inner"][key]
    cfg_path.write_text(json.dumps(cfg))
    old = Checkpoint.load(tmp_path / "ck")
    assert old.adapter.inner.rating_solver == "gd"
    gd = _model(solver="gd")
    gd.load_state_dict(m.state_dict())
    torch.testing.assert_close(old.adapter.adapt(theta0, SB), gd.adapt(theta0, SB))

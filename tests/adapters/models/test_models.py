"""Model maths: the three gradient paths agree, features drive cold items, meta-gradients flow."""
from __future__ import annotations

import pytest
import torch

from adapters.base import SupportBatch
from adapters.meta.inner import inner_loop, support_gradient
from adapters.meta.learners import build_meta_learner
from adapters.models import FeatureTables, build_model


def _tables(n_items: int = 25, n_users: int = 6) -> FeatureTables:
    g = torch.Generator().manual_seed(3)
    return FeatureTables((torch.rand(n_items, 4, generator=g) < 0.4).float(), torch.randint(0, 5, (n_items,), generator=g),
                         torch.randint(0, 4, (n_users,), generator=g), torch.randint(0, 3, (n_users,), generator=g),
                         torch.randint(0, 5, (n_users,), generator=g))


def _model(name: str):
    """``seq-next``: seq with the next-item support task and the content-aware attention (β away from 0)."""
    cfg = {"dim": 8, "rating_dim": 4} if name in ("mf", "seq") else {"emb_dim": 4, "hidden": 8, "n_negatives": 6}
    if name == "seq-next":
        cfg = {"dim": 8, "rating_dim": 4, "support": "next", "next_positions": 3, "attention": "content"}
    m = build_model(name.split("-")[0], 25, _tables(), cfg)
    if name == "seq-next":
        with torch.no_grad():
            m.beta.fill_(0.7)
    return m


SB = SupportBatch.from_lists([[1, 2, 3, 0], [4, 5], [], [7]], [[5, 3, float("nan"), 2], [2, 4], [], [float("nan")]],
                             users=[1, 2, 0, 5])


@pytest.mark.parametrize("name,methods", [("mf", ["analytic", "autograd", "func"]), ("seq", ["analytic", "autograd", "func"]),
                                          ("seq-next", ["analytic", "autograd", "func"]), ("melu", ["autograd", "func"])])
def test_gradient_paths_agree(name, methods):
    m = _model(name)
    s = m.init_states(SB.users).detach() + 0.2 * torch.randn(4, m.state_dim, generator=torch.Generator().manual_seed(1))
    grads = [support_gradient(m, s, SB, meth).detach() for meth in methods]
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], atol=1e-5, rtol=1e-4)
    assert torch.count_nonzero(grads[0][2]) == 0  # empty support → zero gradient
    assert grads[0][0].abs().sum() > 0


@pytest.mark.parametrize("name", ["mf", "seq", "seq-next", "melu"])
def test_inner_loop_paths_agree_over_steps(name):
    m = _model(name)
    s0 = m.init_states(SB.users).detach()
    ref = inner_loop(m, s0, SB, 3, m.inner_lr().detach(), prox=0.5, theta0=s0, method="autograd")
    other = inner_loop(m, s0, SB, 3, m.inner_lr().detach(), prox=0.5, theta0=s0,
                       method="analytic" if name != "melu" else "func")
    torch.testing.assert_close(other.detach(), ref.detach(), atol=1e-5, rtol=1e-4)


def test_proximal_term_pulls_toward_theta0():
    m = _model("mf")
    s0 = m.init_states(SB.users).detach()
    free = m.adapt(s0, SB, steps=5, prox=0.0)
    pulled = m.adapt(s0, SB, steps=5, prox=5.0)
    has = SB.mask.any(1)
    assert ((pulled - s0)[has].norm(dim=1) < (free - s0)[has].norm(dim=1)).all()


@pytest.mark.parametrize("name", ["mf", "seq-next", "melu"])
def test_second_order_meta_gradient_differs_from_first_order(name):
    q = SupportBatch.from_lists([[6], [8, 9], [10], [11]], [[4.0], [1.0, 5.0], [3.0], [2.0]], users=[1, 2, 0, 5])
    grads = {}
    for meta in ("maml", "fomaml"):
        m = _model(name)
        m.zero_grad()
        build_meta_learner(meta, m).objective(m, SB, q, steps=2).backward()
        p = m.theta0 if name == "melu" else m.item_emb
        grads[meta] = p.grad.clone()
    assert torch.isfinite(grads["maml"]).all()
    assert not torch.allclose(grads["maml"], grads["fomaml"])


def test_metasgd_learns_learning_rates():
    from adapters.meta.inner import InnerConfig
    m = build_model("mf", 25, _tables(), {"dim": 8, "rating_dim": 4}, InnerConfig(metasgd=True))
    q = SupportBatch.from_lists([[6], [8], [10], [11]], [[4.0], [1.0], [3.0], [2.0]], users=[1, 2, 0, 5])
    learner = build_meta_learner("metasgd", m)
    learner.objective(m, SB, q).backward()
    assert learner.rates.log_lr.grad is not None and learner.rates.log_lr.grad.abs().sum() > 0
    assert m.adaptation.rates is learner.rates  # the model adapts with the rates its meta-learner owns


def test_melu_scores_unseen_items_from_their_features():
    m = _model("melu")
    s = m.init_states(torch.tensor([1]))
    scores = m.score(s, torch.tensor([1]))[0]
    # id embeddings start at zero: items differ only through genres/year, and do differ
    assert torch.isfinite(scores).all() and scores.unique().numel() > 1


def test_melu_chunked_full_scoring_equals_candidates():
    m = _model("melu")
    m.config.score_chunk = 2
    users = torch.tensor([0, 1, 2, 3, 4])
    s = m.init_states(users).detach() + 0.1
    full = m.score(s, users)
    cand = torch.arange(25).expand(5, -1)
    torch.testing.assert_close(full, m.score(s, users, cand))


def test_melu_catalog_embeddings_are_reused_until_the_weights_change():
    from adapters.models import FeatureTables, build_model

    m = build_model("melu", n_items=12, tables=FeatureTables.empty(12), config={"emb_dim": 4, "hidden": 8})
    m.eval()
    with torch.no_grad():
        first = m.catalog_embeddings()
        assert m.catalog_embeddings() is first  # same model version: computed once
        m.id_emb.weight[3].add_(1.0)  # an in-place update (a training step, a weight load)
        second = m.catalog_embeddings()
    assert second is not first
    assert torch.equal(second, m.item_embed(torch.arange(12)).detach())
    assert not torch.equal(second[3], first[3])

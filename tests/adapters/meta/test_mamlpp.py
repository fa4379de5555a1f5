"""MAML++ (adapters/meta/mamlpp.py): per-step rates in the inner loop, the annealed multi-step loss, derivative-order
annealing, and the per-step rates reaching the checkpoint and the online learner."""
from __future__ import annotations

import math

import pytest
import torch
from synthetic_data import synthetic_dataset

from adapters.base import SupportBatch
from adapters.meta.checkpoint import Checkpoint
from adapters.meta.inner import InnerConfig, inner_loop
from adapters.meta.learners import MAMLpp
from adapters.meta.mamlpp import MAMLPPSchedule, first_order, step_weights
from adapters.meta.training import TrainConfig, train
from adapters.models import FeatureTables, build_model
from adapters.online.learner import Interaction, OnlineConfig, OnlineLearner

SUPPORT = SupportBatch.from_lists([[1, 2, 3], [4], []], [[5.0, 3.0, float("nan")], [2.0], []], [1, 2, 0])
QUERY = SupportBatch.from_lists([[5, 6], [7], [8]], [[4.0, 1.0], [float("nan")], [3.0]], [1, 2, 0])


def _model(name: str = "mf", solver: str = "gd", steps: int = 3):
    config = {"dim": 8, "rating_dim": 4} if name != "melu" else {"emb_dim": 4, "hidden": 8, "n_negatives": 6}
    inner = InnerConfig(steps=steps, lr=0.3, lr_rating=0.05 if name != "melu" else None, prox=0.1,
                        per_step_lr=True, rating_solver=solver)
    m = build_model(name, 12, FeatureTables.empty(12, n_users=3), config, inner)
    steps_rates = m.adaptation.rates.log_lr_steps
    with torch.no_grad():  # distinct rates per step and per entry
        gen = torch.Generator().manual_seed(0)
        steps_rates.copy_(torch.log(torch.rand(steps_rates.shape, generator=gen) * 0.4 + 0.05))
    return m


def _mamlpp(m) -> MAMLpp:
    """MAML++ for ``m``, starting from the rates ``m`` adapts with (the distinct ones of :func:`_model`)."""
    rates = m.adaptation.rates.state_dict()
    learner = MAMLpp(m)
    learner.rates.load_state_dict(rates)
    return learner


def test_step_weights_start_uniform_anneal_to_the_last_step_and_sum_to_one():
    k = 4
    assert torch.allclose(step_weights(k, 0.0), torch.full((k,), 0.25))
    last = [float(step_weights(k, p)[-1]) for p in (0.0, 0.1, 0.25, 0.4, 0.5, 0.8, 1.0)]
    assert last == sorted(last) and last[0] < last[-1]
    for p in (0.0, 0.3, 0.7, 1.0):
        assert math.isclose(float(step_weights(k, p).sum()), 1.0, rel_tol=1e-6)
    done = step_weights(k, 0.5)  # annealed at msl_fraction; earlier steps keep the floor 0.03 / K
    assert torch.allclose(done[:-1], torch.full((k - 1,), 0.03 / k)) and torch.equal(done, step_weights(k, 1.0))
    assert torch.equal(step_weights(1, 0.0), torch.ones(1))
    assert torch.allclose(step_weights(3, 0.0, MAMLPPSchedule(msl_fraction=0.0)), torch.tensor([0.01, 0.01, 0.98]))


def test_derivative_order_annealing_switches_once():
    assert first_order(0.0) and first_order(0.19) and not first_order(0.2) and not first_order(1.0)


@pytest.mark.parametrize("name", ["mf", "seq", "melu"])
def test_per_step_rates_are_used_step_by_step_and_the_last_row_repeats(name):
    m = _model(name)
    s0 = m.init_states(SUPPORT.users).detach()
    rates = m.inner_lr().detach()
    assert rates.shape == (3, m.state_dim)
    by_rows = s0
    for k in range(5):  # two steps more than trained: rows 0, 1, 2, 2, 2
        by_rows = inner_loop(m, by_rows, SUPPORT, 1, rates[min(k, 2)], prox=0.1, theta0=s0, method="autograd")
    torch.testing.assert_close(inner_loop(m, s0, SUPPORT, 5, rates, prox=0.1, theta0=s0, method="autograd"),
                               by_rows, atol=1e-6, rtol=1e-6)
    first_only = inner_loop(m, s0, SUPPORT, 3, rates[0], prox=0.1, theta0=s0, method="autograd")
    assert not torch.allclose(inner_loop(m, s0, SUPPORT, 3, rates, prox=0.1, theta0=s0, method="autograd"),
                              first_only)
    # adapt (the serving entry point) takes the model's per-step rates
    torch.testing.assert_close(m.adapt(s0, SUPPORT, steps=5, prox=0.1), by_rows, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("solver", ["gd", "ridge"])
def test_fast_path_with_per_step_rates_equals_the_generic_one(solver):
    m = _model("mf", solver)
    s0 = m.init_states(SUPPORT.users).detach()
    rates = m.inner_lr().detach()
    fast = inner_loop(m, s0, SUPPORT, 4, rates, prox=0.1, theta0=s0, fast=True)
    slow = inner_loop(m, s0, SUPPORT, 4, rates, prox=0.1, theta0=s0, fast=False)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("solver", ["gd", "ridge"])
def test_trace_holds_every_step_and_ends_with_the_result(solver):
    m = _model("mf", solver)
    s0 = m.init_states(SUPPORT.users).detach()
    rates = m.inner_lr().detach()
    trace: list[torch.Tensor] = []
    out = inner_loop(m, s0, SUPPORT, 3, rates, prox=0.1, theta0=s0, trace=trace)
    assert len(trace) == 3 and torch.equal(trace[-1], out)
    for k in range(2):  # step k's state is the result of k + 1 steps (rating block solved alike)
        torch.testing.assert_close(trace[k], inner_loop(m, s0, SUPPORT, k + 1, rates, prox=0.1, theta0=s0))
    assert not torch.allclose(trace[0], trace[1])


def test_multi_step_loss_weights_each_step_query_loss():
    m = _model("mf")
    s0 = m.init_states(SUPPORT.users).detach()
    rates = m.inner_lr().detach()
    with torch.no_grad():
        per_step = [float(m.batch_loss(inner_loop(m, s0, SUPPORT, k, rates, prox=0.1, theta0=s0), QUERY).mean())
                    for k in (1, 2, 3)]
    for progress in (0.0, 0.3, 1.0):
        expected = sum(w * l for w, l in zip(step_weights(3, progress).tolist(), per_step))
        got = float(_mamlpp(m).objective(m, SUPPORT, QUERY, progress=progress).detach())
        assert math.isclose(got, expected, rel_tol=1e-5), progress
    assert not math.isclose(float(_mamlpp(m).objective(m, SUPPORT, QUERY, progress=0.0).detach()), per_step[-1],
                            rel_tol=1e-4)


def test_meta_gradient_reaches_every_step_rate_first_then_second_order():
    grads = {}
    for progress in (0.0, 1.0):
        m = _model("mf", "gd")
        learner = _mamlpp(m)
        learner.objective(m, SUPPORT, QUERY, progress=progress).backward()
        g = learner.rates.log_lr_steps.grad
        assert g is not None and bool((g.abs().sum(1) > 0).all()), progress  # every step's row learns
        assert learner.rates.log_lr.grad is None  # the base rates are not trained by MAML++
        grads[progress] = m.user0.grad.clone()
    # at progress 0 (first order, uniform weights) the θ0 gradient differs from the annealed second-order one
    assert not torch.allclose(grads[0.0], grads[1.0])
    # first order at progress 0 means: the same θ0 gradient as the first-order loop with the same weights
    m = _model("mf", "gd")
    s0 = m.init_states(SUPPORT.users)
    trace: list[torch.Tensor] = []
    inner_loop(m, s0, SUPPORT, 3, m.inner_lr(), 0.1, s0, first_order=True, trace=trace)
    (step_weights(3, 0.0) * torch.stack([m.batch_loss(s, QUERY).mean() for s in trace])).sum().backward()
    torch.testing.assert_close(m.user0.grad, grads[0.0])


@pytest.fixture(scope="module")
def trained_mamlpp():
    return train(synthetic_dataset(n_users=30, n_items=40, seed=3),
                 TrainConfig(model="seq", meta="mamlpp", epochs=2, pretrain_epochs=1, seed=0, batch_users=8,
                             model_config={"dim": 8, "rating_dim": 4}))


def test_training_learns_per_step_rates_and_the_checkpoint_carries_them(trained_mamlpp, tmp_path):
    ck = trained_mamlpp
    a = ck.adapter
    rates = a.adaptation.rates
    assert a.inner.per_step_lr and ck.meta == "mamlpp" and rates.log_lr_steps.shape == (3, a.state_dim)
    start = rates.log_lr.detach().expand_as(rates.log_lr_steps)
    moved = (rates.log_lr_steps.detach() - start).abs()
    assert float(moved.max()) > 1e-4  # learned
    assert not torch.allclose(rates.log_lr_steps[0], rates.log_lr_steps[2])  # each step its own rates
    back = Checkpoint.load(ck.save(tmp_path / "ck"))
    assert back.config["inner"]["per_step_lr"] is True
    assert torch.equal(back.adapter.adaptation.rates.log_lr_steps, rates.log_lr_steps)
    assert torch.equal(back.adapter.inner_lr(), a.inner_lr())


def _served_state(ck: Checkpoint, steps: int) -> torch.Tensor:
    """The state the online learner (the worker's code) gives a new user after four events."""
    events = [Interaction("u1", str(i), 4.0, float(t), 0, t) for t, i in enumerate([3, 5, 7, 9])]
    learner = OnlineLearner(ck, OnlineConfig(top_k=5, window=8, steps=steps))
    return torch.from_numpy(learner.process(events, {}).records["u1"].state)


def test_online_learner_serves_with_the_checkpoint_s_per_step_rates(trained_mamlpp, tmp_path):
    path = trained_mamlpp.save(tmp_path / "ck")

    def with_zero_rows(rows: slice) -> Checkpoint:
        ck = Checkpoint.load(path)
        with torch.no_grad():
            ck.adapter.adaptation.rates.log_lr_steps[rows] = -math.inf  # rate 0: those steps do not move the state
        return ck

    ck = Checkpoint.load(path)
    assert not torch.allclose(_served_state(ck, 3), _served_state(ck, 1))
    # rows 1 and 2 at rate 0: three served steps are the first step alone -> step k uses row k
    only_first = with_zero_rows(slice(1, None))
    torch.testing.assert_close(_served_state(only_first, 3), _served_state(only_first, 1), rtol=0, atol=0)
    # beyond the trained steps the last row repeats: with row 2 at rate 0, five served steps are two
    last_zero = with_zero_rows(slice(2, None))
    torch.testing.assert_close(_served_state(last_zero, 5), _served_state(last_zero, 2), rtol=0, atol=0)
    assert not torch.allclose(_served_state(last_zero, 2), _served_state(last_zero, 1))
    # and the served state follows the learned rates: replacing them by the first row's changes it
    uniform = Checkpoint.load(path)
    with torch.no_grad():
        rows = uniform.adapter.adaptation.rates.log_lr_steps
        rows[:] = rows[0].clone()
    assert not torch.allclose(_served_state(uniform, 3), _served_state(ck, 3))


def test_warm_start_of_mamlpp_keeps_the_learned_per_step_rates(trained_mamlpp):
    ds = synthetic_dataset(n_users=30, n_items=40, seed=3)
    cfg = TrainConfig(model="seq", meta="mamlpp", epochs=0, pretrain_epochs=0, seed=1, batch_users=8,
                      model_config={"dim": 8, "rating_dim": 4})
    warm = train(ds, cfg, init=trained_mamlpp)
    assert torch.equal(warm.adapter.adaptation.rates.log_lr_steps, trained_mamlpp.adapter.adaptation.rates.log_lr_steps)
    assert "rates.log_lr_steps" not in warm.config["warm_start"]["fresh"]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_commands_offer_every_meta_learner(command):
    import argparse
    import importlib

    from adapters.meta.learners import META_NAMES
    parser = argparse.ArgumentParser()
    importlib.import_module(f"stream.cli.commands.{command}").add_arguments(parser)
    meta = next(a for a in parser._actions if a.dest == "meta")
    assert "mamlpp" in META_NAMES and tuple(meta.choices) == META_NAMES
    args = ["--dataset", "d.csv", "--meta", "mamlpp"] + (["--out", "ck"] if command == "train" else
                                                         ["--protocol", "coldstart", "--json", "o.json"])
    assert parser.parse_args(args).meta == "mamlpp"

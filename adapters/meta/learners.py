"""Meta-learners: the outer objective of one batch of tasks (a task = one user's support and query sets).

All share the model code and the batched inner loop (:mod:`adapters.meta.inner`); each returns a scalar whose
gradient w.r.t. the model's parameters is that algorithm's meta-gradient, so one optimizer drives them all:

* ``maml``    — second order: the query loss after ``K`` differentiable inner steps;
* ``fomaml``  — first order: same, with each inner gradient detached;
* ``metasgd`` — second-order MAML whose per-parameter inner learning rates are learned too;
* ``mamlpp``  — MAML++ (:mod:`adapters.meta.mamlpp`): learned per-step rates, the annealed multi-step loss, first
  order early in training;
* ``reptile`` — θ0 moves toward the states adapted on support ∪ query (surrogate ½‖θ0 − θ'‖²); the shared
  item-side parameters follow the first-order loss at the adapted states;
* ``erm``     — no inner loop during training (plain empirical risk at θ0); the ``erm_finetune`` baseline.

Example
-------
>>> import torch
>>> from adapters.models import build_model, FeatureTables
>>> from adapters.base import SupportBatch
>>> m = build_model("mf", n_items=8, tables=FeatureTables.empty(8), config={"dim": 4, "rating_dim": 2})
>>> s = SupportBatch.from_lists([[1, 2]], [[4.0, 5.0]]); q = SupportBatch.from_lists([[3]], [[2.0]])
>>> meta_objective(m, "maml", s, q, steps=2).backward()
>>> m.item_emb.grad is not None
True
"""
from __future__ import annotations

from typing import Any

import torch

from adapters.base import SupportBatch
from adapters.meta import bayes
from adapters.meta.config import META_NAMES
from adapters.meta.inner import inner_loop
from adapters.meta.mamlpp import first_order, mamlpp_objective

ALL_META = META_NAMES + ("erm",)


def concat(a: SupportBatch, b: SupportBatch) -> SupportBatch:
    """Events of ``a`` then of ``b`` for each user (support ∪ query)."""
    return SupportBatch(torch.cat([a.items, b.items], 1), torch.cat([a.ratings, b.ratings], 1),
                        torch.cat([a.mask, b.mask], 1), torch.cat([a.rated, b.rated], 1), a.users)


def meta_objective(model: Any, meta: str, support: SupportBatch, query: SupportBatch, steps: int | None = None,
                   prox: float | None = None, progress: float = 1.0) -> torch.Tensor:
    """Scalar outer loss of one batch of tasks under meta-learner ``meta``; ``progress`` (the fraction of training
    done) drives MAML++'s annealings and is ignored by the others."""
    steps = model.inner.steps if steps is None else steps
    prox = model.inner.prox if prox is None else prox
    if getattr(model.inner, "task_learner", "gradient") == "bayes" and meta != "erm":
        return _bayes_objective(model, meta, support, query, progress)
    if meta == "mamlpp":
        return mamlpp_objective(model, support, query, steps, prox, progress)
    theta0 = model.init_states(support.users)
    lr = model.inner_lr()
    method = model.inner.grad
    if meta in ("maml", "metasgd"):
        adapted = inner_loop(model, theta0, support, steps, lr, prox, theta0, create_graph=True,
                             first_order=False, method=method)
        return model.batch_loss(adapted, query).mean()
    if meta == "fomaml":
        adapted = inner_loop(model, theta0, support, steps, lr, prox, theta0, first_order=True, method=method)
        return model.batch_loss(adapted, query).mean()
    if meta == "reptile":
        both = concat(support, query)
        anchor = theta0.detach()
        adapted = inner_loop(model, anchor, both, steps, lr.detach(), prox, anchor, first_order=True,
                             method=method).detach()
        pull = 0.5 * ((theta0 - adapted) ** 2).sum(1).mean()
        return model.batch_loss(adapted, both).mean() + pull
    if meta == "erm":
        prepare = getattr(model, "prepare_states", None)
        if prepare is not None:  # the window's context is an input of the model, not adaptation
            return model.batch_loss(prepare(theta0, support), query).mean()
        return model.batch_loss(theta0, concat(support, query)).mean()
    raise ValueError(f"unknown meta-learner {meta!r}; choose from {ALL_META}")


def _bayes_objective(model: Any, meta: str, support: SupportBatch, query: SupportBatch,
                     progress: float = 1.0) -> torch.Tensor:
    """The outer loss with the Bayesian task learner: the query loss at the posterior mean after one update from
    the prior (θ0, Λ0). Its gradient reaches θ0, Λ0 and the item tables through the update's closed form; ``maml``
    and ``metasgd`` (one update, no rates to learn: they coincide) also differentiate through the window's ranking
    gradient (second order), ``mamlpp`` too after its first-order phase, ``fomaml`` never (it holds the gradient and
    Hessian fixed). ``reptile`` moves θ0 toward the posterior mean on support ∪ query instead."""
    s0 = bayes.init_states(model, support.users)
    if meta == "reptile":
        both = concat(support, query)
        adapted = bayes.split(model, bayes.adapt(model, s0.detach(), both))[0].detach()
        pull = 0.5 * ((s0[:, :model.state_dim] - adapted) ** 2).sum(1).mean()
        return model.batch_loss(adapted, both).mean() + pull
    second = meta in ("maml", "metasgd") or (meta == "mamlpp" and not first_order(progress))
    adapted = bayes.split(model, bayes.adapt(model, s0, support, second_order=second))[0]
    return model.batch_loss(adapted, query).mean()

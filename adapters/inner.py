"""The batched inner loop: a few gradient steps on every user's support set at once.

All users of a batch are adapted in one call. Ragged support sets come padded with masks
(:class:`~adapters.base.SupportBatch`); a user with an empty support set keeps its state. One step is

    θ ← θ − α ⊙ (∇ L_support(θ) + 2 λ (θ − θ0))

with α a scalar or per-parameter (Meta-SGD) learning-rate vector and λ the proximal pull toward θ0.

Three ways to get the per-user gradients, which agree to float precision (tested):

* ``"func"`` — ``torch.func``: ``vmap(grad(functional_call(model, ...)))`` over users;
* ``"autograd"`` — one backward pass of the summed batch loss (users are independent, so the gradient
  w.r.t. each user's row is that user's gradient);
* ``"analytic"`` — a closed form the model provides (``mf``: softmax cross-entropy + MSE w.r.t. the
  user vector), the fastest.

``create_graph=True`` keeps the steps differentiable for second-order MAML / Meta-SGD;
``first_order=True`` detaches each step's gradient (FOMAML, Reptile, serving).

Example
-------
>>> import torch
>>> from adapters.models import build_model, FeatureTables
>>> from adapters.base import SupportBatch
>>> m = build_model("mf", n_items=6, tables=FeatureTables.empty(6), config={"dim": 4, "rating_dim": 2})
>>> sb = SupportBatch.from_lists([[1, 2], []], [[5.0, 3.0], []])
>>> s0 = m.init_states(sb.users)
>>> s1 = inner_loop(m, s0, sb, steps=2, lr=torch.tensor(0.1), prox=0.0, theta0=None)
>>> bool(torch.equal(s1[1], s0[1]))   # empty support: unchanged
True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adapters.base import SupportBatch

GRAD_METHODS = ("auto", "analytic", "autograd", "func")


@dataclass
class InnerConfig:
    """Inner-loop defaults of an adapter (overridable per call of ``adapt``)."""

    steps: int = 3  #: gradient steps per adaptation
    lr: float = 0.1  #: inner learning rate (initial value when Meta-SGD learns per-parameter rates)
    #: learning rate of the model's rating block (``mf``: ``[v | b_u]``); None = ``lr``. The rating MSE's gradient
    #: is ``2·err`` per unit, far steeper than the softmax's, so one shared rate over- or under-shoots one block.
    lr_rating: float | None = None
    prox: float = 0.0  #: λ of the proximal term λ‖θ − θ0‖²
    metasgd: bool = False  #: per-parameter learned learning rates
    grad: str = "auto"  #: one of GRAD_METHODS; "auto" = analytic when the model has one, else autograd


def _gradient_autograd(model: Any, states: torch.Tensor, support: SupportBatch, create_graph: bool) -> torch.Tensor:
    with torch.enable_grad():
        s = states if states.requires_grad else states.detach().requires_grad_(True)
        total = model.batch_loss(s, support).sum()
        (g,) = torch.autograd.grad(total, s, create_graph=create_graph)
    return g


def _gradient_func(model: Any, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
    from torch.func import functional_call, grad, vmap
    params = {k: v for k, v in model.named_parameters()}
    buffers = {k: v for k, v in model.named_buffers()}

    def one_user(state, items, ratings, mask, rated, user):
        out = functional_call(model, (params, buffers),
                              (state[None], items[None], ratings[None], mask[None], rated[None], user[None]))
        return out[0]

    return vmap(grad(one_user))(states, support.items, support.ratings, support.mask, support.rated, support.users)


def support_gradient(model: Any, states: torch.Tensor, support: SupportBatch, method: str = "auto",
                     create_graph: bool = False) -> torch.Tensor:
    """Per-user gradient of the support loss w.r.t. the user states, ``[B, state_dim]``."""
    if method not in GRAD_METHODS:
        raise ValueError(f"unknown gradient method {method!r}; choose from {GRAD_METHODS}")
    analytic = getattr(model, "analytic_grad", None)
    if method == "analytic" or (method == "auto" and analytic is not None):
        if analytic is None:
            raise ValueError(f"model {model.name} has no analytic gradient")
        return analytic(states, support)
    if method == "func":
        return _gradient_func(model, states, support)
    return _gradient_autograd(model, states, support, create_graph)


def inner_loop(model: Any, states: torch.Tensor, support: SupportBatch, steps: int, lr: torch.Tensor | float,
               prox: float = 0.0, theta0: torch.Tensor | None = None, create_graph: bool = False,
               first_order: bool = True, method: str = "auto") -> torch.Tensor:
    """Run ``steps`` batched gradient steps from ``states``; returns the adapted states.

    Parameters
    ----------
    model : Adapter module with ``batch_loss`` (and optionally ``analytic_grad``).
    states : ``[B, D]`` starting states (θ0's user part or a previous state).
    support : padded support sets of the same ``B`` users.
    lr : scalar or ``[D]`` learning rates.
    prox, theta0 : proximal weight λ and the anchor θ0 ``[B, D]`` (required when ``prox > 0``).
    create_graph : keep the graph through the steps (second-order meta-gradients).
    first_order : detach each step's gradient (FOMAML); ignored gradients still flow through ``states``.
    """
    if steps <= 0:
        return states
    if prox > 0 and theta0 is None:
        raise ValueError("prox > 0 needs theta0")
    active = support.mask.any(dim=1, keepdim=True).to(states.dtype)  # [B, 1]
    lr_t = torch.as_tensor(lr, dtype=states.dtype)
    for _ in range(steps):
        g = support_gradient(model, states, support, method=method, create_graph=create_graph and not first_order)
        if prox > 0:
            g = g + 2.0 * prox * (states - theta0)
        if first_order:
            g = g.detach()
        states = states - lr_t * g * active
    return states

"""The batched inner loop: a few gradient steps on every user's support set at once.

All users of a batch are adapted in one call. Ragged support sets come padded with masks
(:class:`~adapters.base.SupportBatch`); a user with an empty support set keeps its state. One step is

    θ ← θ − α ⊙ (∇ L_support(θ) + 2 λ (θ − θ0))

with α a scalar or per-parameter (Meta-SGD) learning-rate vector and λ the proximal pull toward θ0. Per-step rates
(MAML++'s LSLR, :mod:`adapters.meta.mamlpp`) come as a ``[K, D]`` matrix: step ``k`` uses row ``k``; asked for more
steps than it has rows, every later step uses the last row (fewer steps use the first rows).

Three ways to get the per-user gradients, which agree to float precision (tested):

* ``"func"`` — ``torch.func``: ``vmap(grad(functional_call(model, ...)))`` over users;
* ``"autograd"`` — one backward pass of the summed batch loss (users are independent, so the gradient
  w.r.t. each user's row is that user's gradient);
* ``"analytic"`` — a closed form the model provides (``mf``: softmax cross-entropy + MSE w.r.t. the
  user vector), the fastest.

``create_graph=True`` keeps the steps differentiable for second-order MAML / Meta-SGD;
``first_order=True`` detaches each step's gradient (FOMAML, Reptile, serving).

Closed-form rating block (``rating_solver="ridge"``, R2D2-style, Bertinetto et al. 2019, "Meta-learning with
differentiable closed-form solvers"): when a model's rating prediction is linear in a block ``s_r`` of the user
state (``mf``: ``r̂ = μ + d_i + [R_i | 1]·[v | b_u]``), the minimiser of

    Σ_j w_j (x_jᵀ s_r − y_j)² + λ ‖s_r − s0_r‖²      (w_j = rating_weight / n_rated on rated events)

is one ``k×k`` linear solve per user, :func:`ridge_block` — exact where a few gradient steps barely move, and
differentiable, so meta-training learns θ0 and the item rating factors *through* it. The gradient steps then
update only the other entries (the ranking block); users with no rated event in their support set keep their
rating block as it was (a warm-started user keeps what it learned from older ratings).

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

from typing import TYPE_CHECKING

import torch

from adapters.base import GradFn, SupportBatch
from adapters.meta.innerconfig import GRAD_METHODS, RATING_SOLVERS, InnerConfig

if TYPE_CHECKING:
    from adapters.base import Adapter

__all__ = ["GRAD_METHODS", "RATING_SOLVERS", "InnerConfig", "inner_loop", "ridge_block", "solve_rating_block",
           "support_gradient"]

def _gradient_autograd(model: Adapter, states: torch.Tensor, support: SupportBatch, create_graph: bool) -> torch.Tensor:
    with torch.enable_grad():
        s = states if states.requires_grad else states.detach().requires_grad_(True)
        total = model.support_loss(s, support).sum()
        (g,) = torch.autograd.grad(total, s, create_graph=create_graph)
    return g


def _gradient_func(model: Adapter, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
    from torch.func import functional_call, grad, vmap
    params = {k: v for k, v in model.named_parameters()}
    buffers = {k: v for k, v in model.named_buffers()}

    def one_user(state, items, ratings, mask, rated, user):
        out = functional_call(model, (params, buffers),
                              (state[None], items[None], ratings[None], mask[None], rated[None], user[None]))
        return out[0]

    return vmap(grad(one_user))(states, support.items, support.ratings, support.mask, support.rated, support.users)


def support_gradient(model: Adapter, states: torch.Tensor, support: SupportBatch, method: str = "auto",
                     create_graph: bool = False) -> torch.Tensor:
    """Per-user gradient of the support loss w.r.t. the user states, ``[B, state_dim]``."""
    if method not in GRAD_METHODS:
        raise ValueError(f"unknown gradient method {method!r}; choose from {GRAD_METHODS}")
    if method in ("analytic", "auto"):
        g = model.analytic_grad(states, support)
        if g is not None:
            return g
        if method == "analytic":
            raise ValueError(f"model {model.name} has no analytic gradient")
    if method == "func":
        return _gradient_func(model, states, support)
    return _gradient_autograd(model, states, support, create_graph)


def ridge_block(design: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, anchor: torch.Tensor,
                lam: float | torch.Tensor) -> torch.Tensor:
    """Batched weighted ridge regression toward an anchor: ``argmin_s Σ_j w_j (x_jᵀ s − y_j)² + λ‖s − a‖²``.

    Parameters
    ----------
    design : ``[B, L, k]`` rows ``x_j``; targets : ``[B, L]``; weights : ``[B, L]`` (0 = event ignored);
    anchor : ``[B, k]``; lam : λ > 0 (keeps every system positive definite), one for every entry or ``[k]``, one
    per entry (``λ‖s − a‖²`` then reads ``Σ_e λ_e (s_e − a_e)²``: a diagonal Gaussian prior).

    Returns ``[B, k]``: the solution of ``(Xᵀ W X + diag λ) s = Xᵀ W y + λ ⊙ a``, one Cholesky solve per user,
    differentiable w.r.t. every input.

    Example
    -------
    >>> import torch
    >>> x = torch.tensor([[[1.0], [1.0]]]); y = torch.tensor([[2.0, 4.0]]); w = torch.full((1, 2), 0.5)
    >>> ridge_block(x, y, w, torch.zeros(1, 1), lam=1.0)   # (0.5·2+0.5·4) / (1 + 1)
    tensor([[1.5000]])
    """
    k = design.shape[-1]
    xw = design * weights[..., None]
    if isinstance(lam, torch.Tensor):
        gram = torch.diag_embed(lam.expand(design.shape[0], k)) + xw.transpose(1, 2) @ design
    else:
        gram = torch.baddbmm(torch.eye(k, dtype=design.dtype), xw.transpose(1, 2), design, beta=lam)
    rhs = (xw * targets[..., None]).sum(1) + lam * anchor
    chol = torch.linalg.cholesky(gram)
    return torch.cholesky_solve(rhs[..., None], chol)[..., 0]


def solve_rating_block(model: Adapter, states: torch.Tensor, support: SupportBatch, anchor: torch.Tensor,
                       lam: float | torch.Tensor, mean: bool = True) -> torch.Tensor:
    """``states`` with the rating block ``model.rating_block`` replaced by its ridge minimiser (users with at least
    one rated event; the others keep theirs). ``anchor`` ``[B, D]`` is θ0's user part; ``mean=False`` sums the
    squared errors instead of averaging them (see ``InnerConfig.ridge_mean``)."""
    block, design = model.rating_block, model.rating_design(support)
    if block is None or design is None:
        raise ValueError(f"model {model.name} has no closed-form rating block")
    design, targets, weights = design
    if not mean:
        weights = weights * (weights > 0).sum(1, keepdim=True).clamp(min=1)
    solved = ridge_block(design, targets, weights, anchor[:, block], lam)
    has = (weights > 0).any(1, keepdim=True)
    new_block = torch.where(has, solved, states[:, block])
    return torch.cat([states[:, :block.start], new_block, states[:, block.stop:]], dim=1)


def _fast_grad(model: Adapter, support: SupportBatch, lr: torch.Tensor, state_dim: int, method: str) -> GradFn | None:
    """The model's precomputed analytic gradient function for ``support`` (None: no such fast path). The rating
    terms are skipped when every rate of the model's rating block is 0 (``rating_solver="ridge"``)."""
    if method not in ("auto", "analytic"):
        return None
    block = model.rating_block
    rates = lr.detach() if lr.dim() == 2 else lr.detach().expand(state_dim)
    rating = block is None or bool((rates[..., block] != 0).any())
    return model.analytic_grad_fn(support, rating=rating)


def _record(trace: list[torch.Tensor] | None, solve: bool, model: Adapter, states: torch.Tensor, support: SupportBatch,
            theta0: torch.Tensor | None, lam: float, mean: bool) -> None:
    """Append one step's states to ``trace`` (if any), with the rating block solved when ``solve``."""
    if trace is not None:
        trace.append(solve_rating_block(model, states, support, theta0, lam, mean) if solve else states)


def inner_loop(model: Adapter, states: torch.Tensor, support: SupportBatch, steps: int, lr: torch.Tensor | float,
               prox: float = 0.0, theta0: torch.Tensor | None = None, create_graph: bool = False,
               first_order: bool = True, method: str = "auto", rating_solver: str | None = None,
               ridge_lambda: float | None = None, ridge_mean: bool | None = None,
               fast: bool = True, trace: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Run ``steps`` batched gradient steps from ``states``; returns the adapted states.

    Parameters
    ----------
    model : the adapter (its ``support_loss``, its ``analytic_grad`` when it has one).
    states : ``[B, D]`` starting states (θ0's user part or a previous state).
    support : padded support sets of the same ``B`` users.
    lr : scalar or ``[D]`` learning rates, or ``[K, D]`` per-step rates (step ``k`` uses row ``min(k, K − 1)``).
    prox, theta0 : proximal weight λ and the anchor θ0 ``[B, D]`` (required when ``prox > 0``).
    create_graph : keep the graph through the steps (second-order meta-gradients).
    first_order : detach each step's gradient (FOMAML); ignored gradients still flow through ``states``.
    rating_solver, ridge_lambda, ridge_mean : None = the model's own (``model.inner``, else gd); ``"ridge"`` = the
        gradient steps leave the model's rating block alone, which is
        then set to its closed-form minimiser (:func:`solve_rating_block`, anchored at ``theta0``, always
        differentiable, also under ``first_order``: the solve is exact, not a chain of steps).
    fast : with ``first_order`` and the analytic gradient, use the model's ``analytic_grad_fn`` when it has one
        (support-only work done once for all steps, no autograd in the steps, the rating gradient skipped where the
        rate is 0); same result as ``fast=False`` (the per-step :func:`support_gradient`) to float rounding.
    trace : a list that receives the states after every step (rating block solved as in the result; the last one
        is the result), for losses on every step (MAML++'s multi-step loss).
    """
    states = model.prepare_states(states, support)  # derived entries (seq: the window's context), before any step
    if steps <= 0:
        return states
    own = model.inner
    rating_solver = own.rating_solver if rating_solver is None else rating_solver
    ridge_lambda = own.ridge_lambda if ridge_lambda is None else ridge_lambda
    ridge_mean = own.ridge_mean if ridge_mean is None else ridge_mean
    if prox > 0 and theta0 is None:
        raise ValueError("prox > 0 needs theta0")
    ridge = rating_solver == "ridge"
    if ridge and (theta0 is None or model.rating_block is None):
        raise ValueError("the ridge rating solver needs theta0 and a model with a closed-form rating block")
    active = support.mask.any(dim=1, keepdim=True).to(states.dtype)  # [B, 1]
    lr_t = torch.as_tensor(lr, dtype=states.dtype)
    if ridge:  # the gradient steps move only the entries outside the rating block
        keep = torch.ones(states.shape[1], dtype=states.dtype)
        keep[model.rating_block] = 0.0
        lr_t = lr_t * keep
    grad_fn = _fast_grad(model, support, lr_t, states.shape[1], method) if fast and first_order else None
    for k in range(steps):
        rate = lr_t[min(k, lr_t.shape[0] - 1)] if lr_t.dim() == 2 else lr_t  # [K, D]: this step's row
        if grad_fn is not None:
            with torch.no_grad():
                g = grad_fn(states)
                if prox > 0:
                    g.add_(states - theta0, alpha=2.0 * prox)
            states = states - (rate * active) * g
            _record(trace, k < steps - 1 and ridge, model, states, support, theta0, ridge_lambda, ridge_mean)
            continue
        g = support_gradient(model, states, support, method=method, create_graph=create_graph and not first_order)
        if prox > 0:
            g = g + 2.0 * prox * (states - theta0)
        if first_order:
            g = g.detach()
        states = states - rate * g * active
        _record(trace, k < steps - 1 and ridge, model, states, support, theta0, ridge_lambda, ridge_mean)
    if ridge:
        states = solve_rating_block(model, states, support, theta0, ridge_lambda, ridge_mean)
        if trace is not None:
            trace[-1] = states
    return states

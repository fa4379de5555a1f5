"""The Bayesian task learner: θ0 as a Gaussian prior, a user's window as data, a diagonal Gaussian posterior.

Where the gradient task learner (:mod:`adapters.meta.inner`) takes a few gradient steps, this one keeps, for every
entry of the user state that adapts, a posterior mean and a posterior precision:

    p(s | window) ∝ exp(−L_window(s)) · N(s; θ0, Λ0⁻¹)          Λ0 = exp(log_prior_prec), meta-learned

(Λ0 is a :class:`~adapters.meta.rates.PriorPrecision` the meta-learner owns, :func:`prior`, and the model adapts with
as its ``adaptation.prior``.)

``L_window`` is the model's support loss (:meth:`batch_loss`), read as a negative log-likelihood.

* **Rating block** (``mf``/``seq``: ``[v | b_u]``, where the loss is quadratic): the posterior is Gaussian and its
  mean is exact, one ``k×k`` Cholesky solve per user, ``(XᵀWX + Λ0/2) m = XᵀWy + Λ0/2 ⊙ θ0``: the ridge solver's
  system (:func:`~adapters.meta.inner.solve_rating_block`). Its prior precision stays twice the ridge λ (meta-learning
  it raised the RMSE), and the next micro-batch solves it again from the window, so its precision is not kept.
* **Ranking block** (the user vector ``u`` and, for ``seq``, the context gain ``g``; softmax cross-entropy over the
  catalogue): a Laplace approximation. The previous posterior ``N(m, P⁻¹)`` relaxes toward the prior (an
  Ornstein–Uhlenbeck step keeping ``persistence`` ρ of the deviation from θ0), then one Newton step with the diagonal
  of the Hessian,

      m' = θ0 + ρ (m − θ0),   1/P' = ρ²/P + (1 − ρ²)/Λ0,   m'' = m' − ∇L(m') / (diag ∇²L(m') + P')

  ``diag ∇²L`` of the cross-entropy w.r.t. the effective vector is ``Σ_i p_i q_i² − (Σ_i p_i q_i)²`` (the catalogue
  softmax ``p``), and ``Var_p(q·ctx)`` for the gain. The precision kept is ``P' + diag ∇²L(m')``.

A state of this learner is ``[model state | precisions of the ranking block]``: for ``seq`` at the defaults
162 + 65 float32, 908 bytes (the rating block's posterior is solved again from the window at every micro-batch).

Scores then come with an uncertainty (:func:`score_std`): ``Var(s_i) = Σ_d q_id² / P_d + (ctx·q_i)² / P_g``, which
:mod:`adapters.online.tasklearner` turns into Thompson sampling or UCB.

Example
-------
>>> import torch
>>> from adapters.models import build_model, FeatureTables
>>> from adapters.errors import MetarecError
from adapters.base import SupportBatch
>>> m = build_model("seq", n_items=6, tables=FeatureTables.empty(6), config={"dim": 4, "rating_dim": 2},
...                 inner={"task_learner": "bayes", "rating_solver": "ridge", "prox": 0.2})
>>> sb = SupportBatch.from_lists([[1, 2], []], [[5.0, 3.0], []])
>>> s0 = init_states(m, sb.users)
>>> s1 = adapt(m, s0, sb)
>>> s1.shape == s0.shape, bool(torch.equal(s1[1], s0[1]))     # an empty window leaves the user alone
(True, True)
>>> bool((s1[0, m.state_dim:] >= s0[0, m.state_dim:]).all())  # data only adds precision
True
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from adapters.base import SupportBatch
from adapters.errors import MetarecError
from adapters.meta.inner import solve_rating_block
from adapters.meta import rates
from adapters.meta.rates import PriorPrecision

if TYPE_CHECKING:  # the models with a closed-form rating block: mf and its subclass seq
    from adapters.models.mf import MFAdapter

TASK_LEARNERS = ("gradient", "bayes")


def _ranking_mask(model: MFAdapter) -> torch.Tensor:
    """``[state_dim]`` True on the ranking block's entries (those of :func:`posterior_entries`)."""
    mask = torch.zeros(model.state_dim, dtype=torch.bool)
    mask[posterior_entries(model)] = True
    return mask


def posterior_entries(model: MFAdapter) -> torch.Tensor:
    """Indices of the state entries whose precision a state keeps: the ranking block (``u`` and ``seq``'s gain), which
    the next micro-batch starts from. The rating block's posterior is solved again from the window at every
    micro-batch, so its precision is not kept (it would cost 4·(rating_dim + 1) bytes per user for nothing); the
    derived context block has none."""
    u_blk, gain = _ranking_entries(model)
    idx = list(range(u_blk.start, u_blk.stop)) + ([gain] if gain is not None else [])
    return torch.tensor(idx, dtype=torch.long)


def default_prior_precision(model: MFAdapter) -> torch.Tensor:
    """``[state_dim]`` Λ0 before meta-learning: the gradient learner's own pulls toward θ0 in the same units
    (``2·prox`` on the ranking entries, twice the ridge λ on the rating block)."""
    return rates.default_prior_precision(model.state_dim, model.inner, model.rating_block)


def prior(model: MFAdapter) -> PriorPrecision:
    """A meta-learnable Λ0 for ``model``, starting at :func:`default_prior_precision`."""
    return PriorPrecision(model.state_dim, model.inner, model.rating_block)


def prior_precision(model: MFAdapter) -> torch.Tensor:
    """``[state_dim]`` Λ0: on the ranking block the meta-learned one the model adapts with when it has one (trained
    with ``task_learner="bayes"``: ``model.adaptation.prior``); on the rating block always twice the ridge λ
    (meta-learning it there raised the RMSE of ML-100K from 0.966 to 0.977: README)."""
    default = default_prior_precision(model)
    learned_prior = model.adaptation.prior
    if learned_prior is None:
        return default
    block = model.rating_block
    learned = learned_prior()
    if block is None:
        return learned
    keep = torch.zeros(model.state_dim, dtype=torch.bool)
    keep[block] = True
    return torch.where(keep, default, learned)


def init_states(model: MFAdapter, users: torch.Tensor) -> torch.Tensor:
    """θ0's states with the prior precisions appended: ``[B, state_dim + n_posterior]``."""
    s0 = model.init_states(users)
    prec = prior_precision(model)[posterior_entries(model)]
    return torch.cat([s0, prec.expand(s0.shape[0], -1)], dim=1)


def split(model: MFAdapter, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(model states [B, state_dim], precisions [B, n_posterior])``."""
    return states[:, :model.state_dim], states[:, model.state_dim:]


def full_precision(model: MFAdapter, prec: torch.Tensor) -> torch.Tensor:
    """``[B, state_dim]`` precisions, +inf on the entries whose precision is not kept (no uncertainty there)."""
    out = torch.full((prec.shape[0], model.state_dim), float("inf"), dtype=prec.dtype)
    out[:, posterior_entries(model)] = prec
    return out


def _ranking_entries(model: MFAdapter) -> tuple[slice, int | None]:
    """The user-vector slice and the gain index (None for ``mf``)."""
    return slice(0, model.config.dim), model.gain_index


def _ranking_grad_hessian(model: MFAdapter, states: torch.Tensor, support: SupportBatch, differentiable: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, state_dim]`` gradient and diagonal Hessian of the ranking loss w.r.t. the ranking block (0 elsewhere and
    for users without a ranking event), from one catalogue softmax. ``differentiable``: with their graph (w.r.t. the
    states and the item tables), for second-order meta-gradients; else detached."""
    if differentiable:
        return _grad_hessian(model, states, support)
    with torch.no_grad():
        return _grad_hessian(model, states.detach(), support)


def _grad_hessian(model: MFAdapter, states: torch.Tensor, support: SupportBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_ranking_grad_hessian`'s computation, with a graph wherever grad mode and the inputs give one."""
    items = support.items
    q_all = model.item_emb
    q, bias = q_all[1:], model.item_bias[1:]
    w = model.positive_weights(support)  # mf: the mean over the window's known items; seq: recency weights
    has = (w.sum(1, keepdim=True) > 0).to(q.dtype)
    rw = float(model.config.rank_weight)
    mean_pos = torch.nn.functional.embedding_bag(items, q_all, mode="sum", per_sample_weights=w)
    p = torch.softmax(torch.addmm(bias, model.ranking_vectors(states), q.t()), dim=1)
    mq = p @ q
    u_blk, gain = _ranking_entries(model)
    gu = (mq * has - mean_pos) * rw
    hu = (p @ (q * q) - mq * mq).clamp(min=0) * has * rw
    g_cols, h_cols = [gu], [hu]
    if gain is not None:
        ctx = states[:, model.ctx_block]
        z = ctx @ q.t()  # [B, N]: q_i·ctx
        m1 = (mq * ctx).sum(1)
        m2 = (z * z * p).sum(1) if torch.is_grad_enabled() else z.mul_(z).mul_(p).sum(1)  # in place: one buffer
        g_cols.append((gu * ctx).sum(1, keepdim=True))
        h_cols.append(((m2 - m1 * m1).clamp(min=0) * has[:, 0] * rw)[:, None])
    return _place(model, states, g_cols), _place(model, states, h_cols)


def _place(model: MFAdapter, states: torch.Tensor, cols: list[torch.Tensor]) -> torch.Tensor:
    """``[B, state_dim]``: the ranking block's columns ``cols`` (``u``, then the gain if any) in place, 0 elsewhere."""
    u_blk, gain = _ranking_entries(model)
    zeros = states.new_zeros(states.shape[0], model.state_dim)
    parts = [cols[0], zeros[:, u_blk.stop:]] if gain is None else \
        [cols[0], zeros[:, u_blk.stop:gain], cols[1], zeros[:, gain + 1:]]
    return torch.cat(parts, dim=1)


def adapt(model: MFAdapter, states: torch.Tensor, support: SupportBatch, persistence: float = 0.0,
          second_order: bool = False) -> torch.Tensor:
    """One Bayesian update of ``states`` (``[B, state_dim + n_posterior]``, from :func:`init_states` or an earlier
    call) on the window ``support``; users with an empty window keep their state.

    * Ranking block: the previous posterior ``N(m, P⁻¹)`` first relaxes toward the prior, an Ornstein–Uhlenbeck step
      that keeps ``persistence`` ρ of the user's deviation from θ0 (``m' = θ0 + ρ(m − θ0)``,
      ``1/P' = ρ²/P + (1 − ρ²)/Λ0``; ρ = 0: every micro-batch starts from the prior), then one Newton step on the
      window's loss from ``m'``: ``m'' = m' − ∇L(m') / (diag ∇²L(m') + P')``, precision ``P' + diag ∇²L(m')``.
    * Rating block: the exact posterior mean of the window under the prior ``N(θ0, Λ0⁻¹)``: the ridge solve of
      :func:`~adapters.meta.inner.solve_rating_block` with λ = Λ0/2 per entry (its precision is not kept: the next
      micro-batch solves it again).

    Differentiable w.r.t. θ0, Λ0 and the item rating factors; the ranking gradient and Hessian are detached (first
    order) unless ``second_order``, when the meta-gradient also flows through them (w.r.t. θ0 and the item tables).
    """
    if model.support_task != "window":
        raise MetarecError(f"the bayes task learner's Newton step is on the window's loss; this model's support task is "
                           f"{model.support_task!r}: use --task-learner gradient")
    theta0, s, p_pred = relax(model, states, support, persistence)
    g, h = _ranking_grad_hessian(model, s, support, differentiable=second_order)
    new_s = torch.where(_ranking_mask(model), s - g / (h + p_pred), s)
    return finish(model, states, support, theta0, new_s, h + p_pred)


def relax(model: MFAdapter, states: torch.Tensor, support: SupportBatch, persistence: float
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first half of :func:`adapt`: the previous posterior relaxed toward the prior (the Ornstein–Uhlenbeck step
    keeping ``persistence`` ρ) and prepared for the window. Returns ``(θ0, m', P')``, each ``[B, state_dim]`` (``P'``
    +inf outside the ranking block)."""
    s_prev, prec = split(model, states)
    theta0 = model.init_states(support.users)
    rank = _ranking_mask(model)
    p_prev = full_precision(model, prec)
    rho = float(persistence)
    s = torch.where(rank, theta0 + rho * (s_prev - theta0), s_prev)
    p_pred = torch.where(rank, 1.0 / (rho * rho / p_prev + (1.0 - rho * rho) / prior_precision(model)), p_prev)
    return theta0, model.prepare_states(s, support), p_pred


def finish(model: MFAdapter, states: torch.Tensor, support: SupportBatch, theta0: torch.Tensor, new_s: torch.Tensor,
           precision: torch.Tensor) -> torch.Tensor:
    """The last half of :func:`adapt`: ``new_s`` (ranking block updated) with the rating block's posterior mean solved,
    and the ranking block's ``precision`` ``[B, state_dim]`` appended; users with an empty window keep ``states``."""
    block = model.rating_block
    if block is not None:
        new_s = solve_rating_block(model, new_s, support, theta0, prior_precision(model)[block] / 2.0,
                                   model.inner.ridge_mean)
    out = torch.cat([new_s, precision[:, posterior_entries(model)]], dim=1)
    return torch.where(support.mask.any(dim=1, keepdim=True), out, states)


@torch.no_grad()
def score_std(model: MFAdapter, states: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, N]`` (or ``[B, C]`` for ``candidates``) posterior standard deviation of the ranking scores."""
    s, prec = split(model, states)
    var = 1.0 / full_precision(model, prec)
    u_blk, gain = _ranking_entries(model)
    q = model.item_emb if candidates is None else model.item_emb[candidates]
    if candidates is None:
        out = (q * q) @ var[:, u_blk].t()
        out = out.t()
        if gain is not None:
            z = s[:, model.ctx_block] @ q.t()
            out = out + z * z * var[:, gain:gain + 1]
    else:
        out = ((q * q) * var[:, None, u_blk]).sum(-1)
        if gain is not None:
            z = (q * s[:, None, model.ctx_block]).sum(-1)
            out = out + z * z * var[:, gain:gain + 1]
    return out.clamp(min=0).sqrt()


@torch.no_grad()
def sample_states(model: MFAdapter, states: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Model states drawn from the posterior of the ranking block (its standard deviations times ``scale``); the
    rest is the posterior mean. For Thompson sampling."""
    s, prec = split(model, states)
    std = full_precision(model, prec).rsqrt()
    mask = _ranking_mask(model)
    eps = torch.randn(s.shape, generator=generator, dtype=s.dtype)
    return s + scale * eps * std * mask

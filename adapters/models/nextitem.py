"""``seq``'s next-item support task: within a user's window, predict each of the newest events from those before it.

The query of meta-training and of serving is the user's *next* item, ranked with the context of the window before it.
The support task asks the same of the window itself: for each of its last ``T`` events ``j_l`` (the *targets*), the
context of the events before it (the *prefix* ``j_0 … j_{l−1}``, ages counted from ``j_{l−1}``) must rank ``j_l``:

    c_l = Σ_{m<l} a_{l,m} K_{j_m},    U_l = u + g · c_l,    L = Σ_l ω_l [logsumexp_i(U_l·Q_i + b_i) − U_l·Q_{j_l} − b_{j_l}]

with ``ω_l ∝ support_decay^(age of j_l)`` summing to 1 over the targets. A user's fast weights (``u``, ``g``) thus
learn what this user goes to next that the context alone does not predict, instead of the mean of the window, which
the context already is. A target with an empty prefix (the first event of a window) is ranked by ``u`` alone.

This module holds the task (:class:`NextItemTask`: the targets, their weights and contexts) and its loss and closed-form
gradient; :class:`~adapters.models.seq.SeqAdapter` builds the task from its attention.

Example
-------
>>> import torch
>>> from adapters.base import SupportBatch
>>> sb = SupportBatch.from_lists([[3, 1, 2], [4]], [[5.0, 4.0, 3.0], [2.0]])
>>> ends, valid = target_positions(sb, positions=2)
>>> ends.tolist(), valid.tolist()   # user 0: its events 1 and 2 are targets; user 1: its only event, prefix empty
([[1, 2], [-1, 0]], [[True, True], [False, True]])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from adapters.base import SupportBatch


@dataclass
class NextItemTask:
    """The support task of ``B`` users, ``T`` targets each (see the module docstring)."""

    targets: torch.Tensor  #: ``[B, T]`` item rows of the targets (0 where there is none)
    weights: torch.Tensor  #: ``[B, T]`` ω, summing to 1 for a user with a target (0 elsewhere)
    contexts: torch.Tensor  #: ``[B, T, dim]`` the context of each target's prefix (0 for an empty prefix)

    def ranking_vectors(self, states: torch.Tensor, dim: int, gain_index: int) -> torch.Tensor:
        """``[B, T, dim]`` ``U_l = u + g·c_l``."""
        return states[:, None, :dim] + states[:, None, gain_index:gain_index + 1] * self.contexts


def target_positions(support: SupportBatch, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window positions of each user's last ``positions`` events ``[B, T]`` (−1 before the window's start: no target)
    and whether each is a target (a present event with a known item)."""
    n = support.mask.sum(1, keepdim=True)
    ends = n - positions + torch.arange(positions)[None, :]
    at = ends.clamp(min=0)
    valid = (ends >= 0) & support.mask.gather(1, at) & (support.items.gather(1, at) > 0)
    return ends, valid


def target_weights(ends: torch.Tensor, valid: torch.Tensor, n: torch.Tensor, decay: float) -> torch.Tensor:
    """``[B, T]`` recency weights ``decay^(n − 1 − l)`` of the targets, summing to 1 per user with one."""
    age = (n - 1 - ends).clamp(min=0).to(torch.float32)
    w = torch.pow(torch.tensor(decay, dtype=torch.float32), age) * valid.to(torch.float32)
    return w / w.sum(1, keepdim=True).clamp(min=1e-12)


def ranking_loss(task: NextItemTask, u_eff: torch.Tensor, item_emb: torch.Tensor, item_bias: torch.Tensor
                 ) -> torch.Tensor:
    """``[B]`` the weighted next-item cross-entropy over the catalogue (rows 1…), differentiable."""
    b, t, d = u_eff.shape
    logits = torch.addmm(item_bias[1:], u_eff.reshape(b * t, d), item_emb[1:].t())
    lse = torch.logsumexp(logits, dim=1).reshape(b, t)
    z_pos = (u_eff * item_emb[task.targets]).sum(-1) + item_bias[task.targets]
    return ((lse - z_pos) * task.weights).sum(1)


def ranking_grad(task: NextItemTask, u_eff: torch.Tensor, item_emb: torch.Tensor, item_bias: torch.Tensor,
                 target_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form gradients of :func:`ranking_loss` w.r.t. ``u`` ``[B, dim]`` and ``g`` ``[B, 1]``:
    ``Σ_l ω_l r_l`` and ``Σ_l ω_l r_l·c_l`` with ``r_l = Qᵀ softmax(U_l Q + b) − Q_{j_l}``; differentiable (no
    in-place operations). ``target_rows``: ``item_emb[task.targets]`` when the caller has it."""
    b, t, d = u_eff.shape
    q = item_emb[1:]
    p = torch.softmax(torch.addmm(item_bias[1:], u_eff.reshape(b * t, d), q.t()), dim=1)
    pos = item_emb[task.targets] if target_rows is None else target_rows
    r = (p @ q).reshape(b, t, d) - pos
    wr = r * task.weights[..., None]
    return wr.sum(1), (wr * task.contexts).sum((1, 2))[:, None]

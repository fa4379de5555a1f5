"""``seq``: attention over the user's window on top of ``mf`` — an order-aware adapter.

Users meet related items one after another; a window seen as a bag (``mf``) loses that. ``seq`` keeps every part
of :class:`~adapters.models.mf.MFAdapter` (item embeddings ``Q``, ranking biases ``c``, the rating head and its
closed-form block) and adds a *context*: an attention-weighted sum of the window's items in a second, learned item
space ``K`` (context embeddings, initialised from ``Q``):

    ctx = Σ_l a_l K_{j_l},    a = softmax_l(−ρ · age_l)          (age 0 = the newest event of the window)
    s(i) = (u + g · ctx) · Q_i + c_i

``ρ = softplus(rho)`` (recency sharpness) and ``K`` are meta-learned with θ0; the per-user gain ``g`` (how much
this user follows their own sequence rather than their long-term taste) and the user vector ``u`` are adapted by
the inner loop. The support loss weights the window's events by recency too (``ω_l ∝ support_decay^age_l``): the
newest events say most about what comes next.

User state (``2·dim + rating_dim + 2`` float32, 648 bytes at the defaults): ``[u | v | b_u | g | ctx]``. ``ctx`` is
*derived*: :meth:`SeqAdapter.prepare_states` sets it from the support set (the window) before the inner steps,
whose learning rate on it is 0, so that ranking needs nothing but the state (and a stored state scores exactly as
it did when it was adapted).

Item-to-item affinity of window item ``j`` and candidate ``i`` is ``g · a_j · K_j·Q_i``: the learned part. The
online co-occurrence prior (:mod:`adapters.online.items.table`) adds the counted part in the learner.

Example
-------
>>> import torch
>>> from adapters.models import FeatureTables
>>> from adapters.meta.inner import InnerConfig
>>> from adapters.base import GradFn, SupportBatch
>>> m = SeqAdapter(SeqConfig(dim=4, rating_dim=2), n_items=8, tables=FeatureTables.empty(8), inner=InnerConfig())
>>> sb = SupportBatch.from_lists([[1, 2, 3], []], [[5.0, 4.0, 3.0], []])
>>> s = m.prepare_states(m.init_states(sb.users), sb)
>>> bool(s[0, m.ctx_block].abs().sum() > 0), bool(s[1, m.ctx_block].abs().sum() == 0)   # no window: no context
(True, True)
>>> m.score(s, sb.users).shape
torch.Size([2, 8])
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from adapters.base import GradFn, SupportBatch
from adapters.errors import MetarecError
from adapters.meta.inner import InnerConfig
from adapters.models import FeatureTables
from adapters.models.mf import MFAdapter, MFConfig
from adapters.models.nextitem import NextItemTask, ranking_grad, ranking_loss, target_positions, target_weights


SUPPORT_TASKS = ("window", "next")
ATTENTIONS = ("age", "content")


@dataclass
class SeqConfig(MFConfig):
    rho: float = 0.3  #: initial recency sharpness of the context attention (meta-learned)
    gain: float = 1.0  #: θ0's context gain g (meta-learned, adapted per user)
    support_decay: float = 0.8  #: recency weight of the support loss, per event of age
    #: the inner loop's ranking task: "window" = rank the window's items with the window's context; "next" = rank
    #: each of the window's last ``next_positions`` events with the context of the events before it
    #: (:mod:`adapters.models.nextitem`), the task the query asks
    support: str = "window"
    next_positions: int = 4
    #: what the context attention reads: "age" = recency only; "content" = recency and each item's match with the
    #: newest one, ``−ρ·age + β·K_j·K_newest/√dim`` (β meta-learned from 0)
    attention: str = "age"

    def __post_init__(self) -> None:
        if self.support not in SUPPORT_TASKS:
            raise MetarecError(f"unknown support task {self.support!r} (choose {' or '.join(SUPPORT_TASKS)})")
        if self.attention not in ATTENTIONS:
            raise MetarecError(f"unknown attention {self.attention!r} (choose {' or '.join(ATTENTIONS)})")
        if self.next_positions < 1:
            raise MetarecError(f"next_positions must be ≥ 1, got {self.next_positions}")


class SeqAdapter(MFAdapter):
    name = "seq"
    ITEM_TABLES = MFAdapter.ITEM_TABLES + ("ctx_emb",)

    def __init__(self, config: SeqConfig, n_items: int, tables: FeatureTables, inner: InnerConfig) -> None:
        super().__init__(config, n_items, tables, inner)
        self.ctx_emb = nn.Parameter(self.item_emb.detach().clone())
        self.rho = nn.Parameter(torch.tensor(math.log(math.expm1(config.rho))))
        if config.attention == "content":
            self.beta = nn.Parameter(torch.zeros(()))  #: weight of the content term of the attention
        self.support_task = config.support
        with torch.no_grad():
            self.user0[self.gain_index] = config.gain

    @property
    def gain_index(self) -> int:  # type: ignore[override]
        """The state entry of the context gain ``g``."""
        return self.config.dim + self.config.rating_dim + 1

    @property
    def ctx_block(self) -> slice:  # type: ignore[override]
        """The state entries of the derived context ``ctx``."""
        d = self.config.dim
        return slice(d + self.config.rating_dim + 2, 2 * d + self.config.rating_dim + 2)

    def _state_dim(self) -> int:
        return 2 * self.config.dim + self.config.rating_dim + 2

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        with torch.no_grad():
            self.ctx_emb.copy_(self.item_emb)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    @property
    def derived_block(self) -> slice:
        """The context block: set from the window by :meth:`prepare_states`, its inner rate is 0."""
        return self.ctx_block

    def after_pretrain(self, rows: torch.Tensor | None) -> None:
        """The context space starts as the pre-trained item space (``rows``: only those rows; None: all)."""
        with torch.no_grad():
            if rows is None:
                self.ctx_emb.copy_(self.item_emb)
            else:
                self.ctx_emb[rows] = self.item_emb[rows]

    # ---- the context ------------------------------------------------------------------------------
    def attention(self, support: SupportBatch) -> torch.Tensor:
        """``[B, L]`` attention weights over the window (softmax of −ρ·age over the known items, plus the content
        term with ``attention="content"``; rows of an empty window are 0)."""
        if self.config.attention != "age":
            return self.prefix_attention(support, support.mask.sum(1, keepdim=True))[:, 0]
        valid = support.mask & (support.items > 0)
        age = _ages(support.mask)
        logits = (-nn.functional.softplus(self.rho) * age).masked_fill(~valid, -math.inf)
        a = torch.softmax(logits, dim=1)
        return torch.nan_to_num(a, nan=0.0)

    def prefix_attention(self, support: SupportBatch, ends: torch.Tensor) -> torch.Tensor:
        """``[B, T, L]`` attention weights of the prefixes ``j_0 … j_{e−1}`` of each window for the ``ends`` ``[B, T]``
        (ages counted from ``j_{e−1}``; an empty prefix has weights 0)."""
        length = support.items.shape[1]
        m = torch.arange(length)[None, None, :]
        e = ends[..., None]
        valid = (m < e) & (support.mask & (support.items > 0))[:, None, :]
        logits = -nn.functional.softplus(self.rho) * (e - 1 - m).clamp(min=0).to(torch.float32)
        if self.config.attention == "content":
            keys = self.ctx_emb[support.items]  # [B, L, d]
            last = keys.gather(1, (ends - 1).clamp(min=0)[..., None].expand(-1, -1, keys.shape[2]))  # [B, T, d]
            logits = logits + self.beta * torch.bmm(last, keys.transpose(1, 2)) / math.sqrt(keys.shape[2])
        a = torch.softmax(logits.masked_fill(~valid, -math.inf), dim=2)
        return torch.nan_to_num(a, nan=0.0)

    def next_task(self, support: SupportBatch) -> NextItemTask:
        """The next-item support task of ``support`` (:mod:`adapters.models.nextitem`), differentiable w.r.t.
        ``ctx_emb`` and the attention's parameters."""
        ends, valid = target_positions(support, self.config.next_positions)
        at = ends.clamp(min=0)
        weights = target_weights(ends, valid, support.mask.sum(1, keepdim=True), self.config.support_decay)
        contexts = torch.bmm(self.prefix_attention(support, at), self.ctx_emb[support.items])
        return NextItemTask(support.items.gather(1, at) * valid, weights, contexts)

    def context(self, support: SupportBatch) -> torch.Tensor:
        """``[B, dim]`` attention-weighted context of each window."""
        # a gather and a weighted sum, not embedding_bag: its backward is not deterministic across threads
        return (self.attention(support)[..., None] * self.ctx_emb[support.items]).sum(1)

    def prepare_states(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """``states`` with the context block set from ``support`` (differentiable w.r.t. ``ctx_emb`` and ``rho``);
        a user with an empty support keeps their state."""
        blk = self.ctx_block
        has = (support.mask & (support.items > 0)).any(1, keepdim=True)
        ctx = torch.where(has, self.context(support), states[:, blk])
        return torch.cat([states[:, :blk.start], ctx, states[:, blk.stop:]], dim=1)

    def init_states(self, users: torch.Tensor) -> torch.Tensor:
        """θ0's user part; the derived context block is 0 (no window yet)."""
        s = super().init_states(users)
        blk = self.ctx_block
        return torch.cat([s[:, :blk.start], torch.zeros_like(s[:, blk]), s[:, blk.stop:]], dim=1)

    def ranking_vectors(self, states: torch.Tensor) -> torch.Tensor:
        """``u + g·ctx`` ``[B, dim]``: the vector that ranks the catalog."""
        d = self.config.dim
        return states[:, :d] + states[:, self.gain_index:self.gain_index + 1] * states[:, self.ctx_block]

    def window_affinity(self, states: torch.Tensor, support: SupportBatch, rows: torch.Tensor) -> torch.Tensor:
        """``[B, L, k]`` ``g · a_l · K_{j_l}·Q_i``: what window position ``l`` adds to the score of listed item ``i``
        (``rows`` ``[B, k]``) through the context."""
        g = states[:, self.gain_index]
        dots = torch.bmm(self.ctx_emb[support.items], self.item_emb[rows].transpose(1, 2))
        return g[:, None, None] * self.attention(support)[..., None] * dots

    def positive_weights(self, support: SupportBatch) -> torch.Tensor:
        """``[B, L]`` recency weights of the support loss's positives, summing to 1 per non-empty row."""
        valid = (support.mask & (support.items > 0)).to(self.item_emb.dtype)
        w = torch.pow(torch.tensor(self.config.support_decay, dtype=valid.dtype), _ages(support.mask)) * valid
        return w / w.sum(1, keepdim=True).clamp(min=1e-12)

    # ---- support loss and its gradient ------------------------------------------------------------
    def pretrain_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """The item-side pre-training loss: ``mf``'s, on the ``[u | v | b_u]`` part of the states (no window)."""
        return MFAdapter.batch_loss(self, states, support)

    def batch_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        u = self.ranking_vectors(states)
        items = support.items
        w = self.positive_weights(support)
        logits = torch.addmm(self.item_bias[1:], u, self.item_emb[1:].t())
        lse = torch.logsumexp(logits, dim=1)
        z_pos = (u[:, None, :] * self.item_emb[items]).sum(-1) + self.item_bias[items]
        ce = ((lse[:, None] - z_pos) * w).sum(1)
        rated = (support.mask & support.rated).to(states.dtype)
        err = (self._predict(states, support.users, items) - support.ratings) * rated
        mse = (err ** 2).sum(1) / rated.sum(1).clamp(min=1)
        return self.config.rank_weight * ce + self.config.rating_weight * mse

    def support_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """The inner loop's loss: :meth:`batch_loss` (``support="window"``), or the next-item task's ranking loss
        plus the same rating loss (``support="next"``)."""
        if self.config.support == "window":
            return self.batch_loss(states, support)
        task = self.next_task(support)
        u_eff = task.ranking_vectors(states, self.config.dim, self.gain_index)
        ce = ranking_loss(task, u_eff, self.item_emb, self.item_bias)
        return self.config.rank_weight * ce + self.config.rating_weight * self._rating_mse(states, support)

    def _rating_mse(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        rated = (support.mask & support.rated).to(states.dtype)
        err = (self._predict(states, support.users, support.items) - support.ratings) * rated
        return (err ** 2).sum(1) / rated.sum(1).clamp(min=1)

    def analytic_grad(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """Closed-form per-user gradient of :meth:`support_loss` w.r.t. the states (the context block's too, although
        its inner rate is 0); ``support="next"``: differentiable (second-order meta-gradients flow through it)."""
        if self.config.support == "window":
            return self.analytic_grad_fn(support)(states)
        cfg = self.config
        d, r = cfg.dim, cfg.rating_dim
        task = self.next_task(support)
        gu, gg = ranking_grad(task, task.ranking_vectors(states, d, self.gain_index), self.item_emb, self.item_bias)
        rated = (support.mask & support.rated).to(states.dtype)
        err = (self._predict(states, support.users, support.items) - support.ratings) * rated
        scale = 2.0 * cfg.rating_weight / rated.sum(1, keepdim=True).clamp(min=1)
        gv = scale * (err[..., None] * self.item_rate[support.items]).sum(1)
        gb = scale * err.sum(1, keepdim=True)
        return torch.cat([gu * cfg.rank_weight, gv, gb, gg * cfg.rank_weight, torch.zeros_like(states[:, self.ctx_block])],
                         dim=1)

    def analytic_grad_fn(self, support: SupportBatch, rating: bool = True) -> GradFn:
        """Gradient function for many states on one support batch, no autograd (first-order steps).

        ``∂L/∂u = Qᵀp − Σ_l ω_l Q_{j_l}`` (``p`` = softmax of the effective vector's logits), ``∂L/∂g = ∂L/∂u · ctx``,
        ``∂L/∂ctx = g · ∂L/∂u`` (its inner rate is 0: the block is derived), the rating terms as ``mf``'s.
        ``support="next"``: the next-item task's gradient (:func:`adapters.models.nextitem.ranking_grad`), its
        targets, weights and contexts computed once here.
        """
        cfg = self.config
        d, r = cfg.dim, cfg.rating_dim
        nxt = cfg.support == "next"
        with torch.no_grad():
            items = support.items
            q_all = self.item_emb.detach()
            q, bias = q_all[1:], self.item_bias.detach()[1:]
            if nxt:
                task = self.next_task(support)
                task = NextItemTask(task.targets, task.weights.detach(), task.contexts.detach())
                pos = q_all[task.targets]
            else:
                w = self.positive_weights(support).detach()
                has_rank = (w.sum(1, keepdim=True) > 0).to(q.dtype)
                mean_pos = nn.functional.embedding_bag(items, q_all, mode="sum", per_sample_weights=w)
            rated = (support.mask & support.rated).to(q.dtype)
            r_items = self.item_rate.detach()[items]
            offset = (self.global_mean.detach() + self.item_rate_bias.detach()[items] - support.ratings) * rated
            scale = 2.0 * cfg.rating_weight / rated.sum(1, keepdim=True).clamp(min=1)

        def grad(states: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                if nxt:
                    gu, gg = ranking_grad(task, task.ranking_vectors(states, d, self.gain_index), q_all,
                                          self.item_bias.detach(), pos)
                    gu, gg = gu * cfg.rank_weight, gg * cfg.rank_weight
                else:
                    u = self.ranking_vectors(states)
                    p = torch.softmax(torch.addmm(bias, u, q.t()), dim=1)
                    gu = torch.mm(p, q).mul_(has_rank).sub_(mean_pos).mul_(cfg.rank_weight)
                    gg = (gu * states[:, self.ctx_block]).sum(1, keepdim=True)
                if rating:
                    v, b = states[:, d:d + r], states[:, d + r:d + r + 1]
                    err = (torch.bmm(r_items, v[:, :, None])[..., 0] + b + offset) * rated
                    gv = torch.bmm(err[:, None, :], r_items)[:, 0] * scale
                    gb = err.sum(1, keepdim=True) * scale
                else:
                    gv, gb = gu.new_zeros(gu.shape[0], r), gu.new_zeros(gu.shape[0], 1)
                gain = states[:, self.gain_index:self.gain_index + 1]
                g_ctx = torch.zeros_like(gu) if nxt else gu * gain  # next: the derived block is not in the loss
                return torch.cat([gu, gv, gb, gg, g_ctx], dim=1)

        return grad


def _ages(mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` float age of each window position (0 = newest present event; padding sits at the end)."""
    n = mask.sum(1, keepdim=True)
    pos = torch.arange(mask.shape[1], device=mask.device)[None, :]
    return (n - 1 - pos).clamp(min=0).to(torch.float32)

"""``mf``: matrix factorization whose user part adapts per user.

Global (shared by all users): item embeddings ``Q`` ``[n_items, dim]`` with ranking biases ``c``, a rating
head (item factors ``R`` ``[n_items, rating_dim]``, item rating biases, global mean), and θ0's user part: a
learned vector plus embeddings of the user's features (age, gender, occupation; code 0 = unknown).
Row 0 of every item table is the *unknown item* (a generic new-item vector).

User state (``dim + rating_dim + 1`` float32, 388 bytes at the defaults): ``[u (ranking) | v (rating) | b_u]``.

* ranking score  ``s(i) = u·Q_i + c_i``; support loss = full-softmax next-item cross-entropy over the
  catalog (rows 1..n-1) for every support event with a known item;
* rating         ``r̂(i) = μ + b_u + d_i + v·R_i`` (clamped to the dataset's rating range in ``predict``);
  support loss += ``rating_weight`` × mean squared error on the rated events.

The rating prediction is linear in the rating block ``[v | b_u]`` (design row ``[R_i | 1]``, target
``r − μ − d_i``: :meth:`MFAdapter.rating_design`), so with ``InnerConfig(rating_solver="ridge")`` the inner loop
sets that block to the exact minimiser of the rating loss + the pull toward θ0 (:func:`adapters.meta.inner.ridge_block`)
instead of taking gradient steps on it.

The per-user gradient has a closed form (``analytic_grad``): ``∂CE/∂u = Qᵀp − mean_j Q_{i_j}`` with ``p`` the
softmax over the catalog, and the usual MSE terms for ``v`` and ``b_u``. For first-order steps (serving, FOMAML,
Reptile) :meth:`MFAdapter.analytic_grad_fn` gives the same gradient with the support-only work done once per
adaptation, no autograd and the rating terms skipped when they are not used (ridge): two catalog GEMMs and one
softmax per step.

Example
-------
>>> import torch
>>> from adapters.models import FeatureTables
>>> from adapters.meta.inner import InnerConfig
>>> m = MFAdapter(MFConfig(dim=8, rating_dim=4), n_items=20, tables=FeatureTables.empty(20), inner=InnerConfig())
>>> s = m.init_states(torch.tensor([0, 0]))
>>> m.score(s, torch.tensor([0, 0])).shape
torch.Size([2, 20])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from adapters.base import GradFn, SupportBatch
from adapters.meta.inner import InnerConfig
from adapters.models import AdapterModule, FeatureTables


@dataclass
class MFConfig:
    dim: int = 64  #: ranking embedding size
    rating_dim: int = 32  #: rating factor size
    rank_weight: float = 1.0  #: weight of the softmax cross-entropy
    rating_weight: float = 1.0  #: weight of the rating MSE
    rating_min: float = 1.0
    rating_max: float = 5.0
    global_mean: float = 3.5
    use_user_features: bool = True


class MFAdapter(AdapterModule):
    name = "mf"

    def __init__(self, config: MFConfig, n_items: int, tables: FeatureTables, inner: InnerConfig) -> None:
        super().__init__(n_items, inner)
        self.config = config
        self.rating_min, self.rating_max = float(config.rating_min), float(config.rating_max)
        d, r = config.dim, config.rating_dim
        self.state_dim = self._state_dim()
        self.rating_block = slice(d, d + r + 1)
        gen = torch.Generator().manual_seed(0)
        self.item_emb = nn.Parameter(torch.randn(n_items, d, generator=gen) * 0.1)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.item_rate = nn.Parameter(torch.randn(n_items, r, generator=gen) * 0.01)
        self.item_rate_bias = nn.Parameter(torch.zeros(n_items))
        self.global_mean = nn.Parameter(torch.tensor(float(config.global_mean)))
        self.user0 = nn.Parameter(torch.zeros(self.state_dim))
        card = self._cards = tables.cardinalities()
        self.register_buffer("user_age", tables.user_age.clone())
        self.register_buffer("user_gender", tables.user_gender.clone())
        self.register_buffer("user_occupation", tables.user_occupation.clone())
        self.age_emb = nn.Embedding(card["n_ages"], self.state_dim)
        self.gender_emb = nn.Embedding(card["n_genders"], self.state_dim)
        self.occ_emb = nn.Embedding(card["n_occupations"], self.state_dim)
        for e in (self.age_emb, self.gender_emb, self.occ_emb):
            nn.init.zeros_(e.weight)
        self._finish()

    #: the per-item tables (one row per item row): what grows with an online vocabulary and what a new row resets
    ITEM_TABLES: tuple[str, ...] = ("item_emb", "item_bias", "item_rate", "item_rate_bias")
    #: the state entries the bayes task learner keeps a posterior of besides ``u`` (seq: the context gain ``g``)
    gain_index: int | None = None
    #: the derived context block (seq); None: no context
    ctx_block: slice | None = None

    def ranking_vectors(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, dim]``: the vector that ranks the catalog (mf: the user vector ``u``)."""
        return states[:, :self.config.dim]

    def rating_vectors(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, rating_dim]``: the rating vector ``v``."""
        return self._split(states)[1]

    def item_embeddings(self) -> torch.Tensor:
        """The ranking embeddings ``Q`` ``[n_items, dim]``."""
        return self.item_emb

    def positive_weights(self, support: SupportBatch) -> torch.Tensor:
        """``[B, L]`` weights of the support loss's positives: the mean over the window's known items."""
        valid = (support.mask & (support.items > 0)).to(self.item_emb.dtype)
        return valid / valid.sum(1, keepdim=True).clamp(min=1)

    def after_pretrain(self, rows: torch.Tensor | None) -> None:
        """Called once the item side was pre-trained (``rows``: only those rows learned; None: all); mf: nothing."""
        return None

    def _state_dim(self) -> int:
        """Length of a user state (subclasses append entries after ``[u | v | b_u]``)."""
        return self.config.dim + self.config.rating_dim + 1

    def reseed(self, seed: int) -> None:
        """Re-draw the random item factors from ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.item_emb.copy_(torch.randn(self.item_emb.shape, generator=gen) * 0.1)
            self.item_rate.copy_(torch.randn(self.item_rate.shape, generator=gen) * 0.01)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    # ---- θ0 -----------------------------------------------------------------------------------------
    def init_states(self, users: torch.Tensor) -> torch.Tensor:
        users = users.long().clamp(0, self.user_age.shape[0] - 1)
        s = self.user0.expand(users.shape[0], -1)
        if self.config.use_user_features:
            s = s + self.age_emb(self.user_age[users]) + self.gender_emb(self.user_gender[users]) \
                + self.occ_emb(self.user_occupation[users])
        return s

    def _split(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d, r = self.config.dim, self.config.rating_dim
        return states[:, :d], states[:, d:d + r], states[:, d + r]

    # ---- scores -----------------------------------------------------------------------------------
    def _score(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        u = self.ranking_vectors(states)
        if candidates is None:
            return torch.addmm(self.item_bias, u, self.item_emb.t())
        return (u[:, None, :] * self.item_emb[candidates]).sum(-1) + self.item_bias[candidates]

    def _predict(self, states: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        _, v, b = self._split(states)
        return (self.global_mean + b[:, None] + self.item_rate_bias[items]
                + (v[:, None, :] * self.item_rate[items]).sum(-1))

    # ---- support loss and its closed-form gradient ----------------------------------------------
    def _parts(self, states: torch.Tensor, support: SupportBatch):
        u, v, b = self._split(states)
        items = support.items
        rank_valid = (support.mask & (items > 0)).to(states.dtype)
        rated = (support.mask & support.rated).to(states.dtype)
        n_rank = rank_valid.sum(1)
        n_rated = rated.sum(1)
        logits = torch.addmm(self.item_bias[1:], u, self.item_emb[1:].t())  # [B, N-1]
        err = (self._predict(states, support.users, items) - support.ratings) * rated
        return u, v, b, items, rank_valid, n_rank, n_rated, logits, err

    def rating_design(self, support: SupportBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rating loss as a weighted least-squares problem in the rating block ``[v | b_u]``.

        Returns design rows ``[R_i | 1]`` ``[B, L, r+1]``, targets ``r − μ − d_i`` ``[B, L]`` and weights
        ``rating_weight / n_rated`` on rated events (0 elsewhere) ``[B, L]``: the support loss's rating term is
        ``Σ_j w_j (x_jᵀ [v | b_u] − y_j)²``.
        """
        items = support.items
        rated = (support.mask & support.rated).to(self.item_rate.dtype)
        n_rated = rated.sum(1, keepdim=True).clamp(min=1)
        design = torch.cat([self.item_rate[items], torch.ones(*items.shape, 1, dtype=self.item_rate.dtype)], dim=-1)
        targets = (support.ratings - self.global_mean - self.item_rate_bias[items]) * rated
        return design, targets, self.config.rating_weight * rated / n_rated

    def batch_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        u, v, b, items, rank_valid, n_rank, n_rated, logits, err = self._parts(states, support)
        lse = torch.logsumexp(logits, dim=1)
        z_pos = (u[:, None, :] * self.item_emb[items]).sum(-1) + self.item_bias[items]
        ce = ((lse[:, None] - z_pos) * rank_valid).sum(1) / n_rank.clamp(min=1)
        mse = (err ** 2).sum(1) / n_rated.clamp(min=1)
        return self.config.rank_weight * ce + self.config.rating_weight * mse

    def analytic_grad(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """Closed-form per-user gradient of :meth:`batch_loss` w.r.t. the states ``[B, state_dim]``."""
        u, v, b, items, rank_valid, n_rank, n_rated, logits, err = self._parts(states, support)
        p = torch.softmax(logits, dim=1)
        has_rank = (n_rank > 0).to(states.dtype)[:, None]
        mean_pos = (self.item_emb[items] * rank_valid[..., None]).sum(1) / n_rank.clamp(min=1)[:, None]
        gu = (p @ self.item_emb[1:] * has_rank - mean_pos) * self.config.rank_weight
        scale = (2.0 * self.config.rating_weight / n_rated.clamp(min=1))[:, None]
        gv = scale * (err[..., None] * self.item_rate[items]).sum(1)
        gb = scale * err.sum(1, keepdim=True)
        return torch.cat([gu, gv, gb], dim=1)

    def analytic_grad_fn(self, support: SupportBatch, rating: bool = True) -> GradFn:
        """:meth:`analytic_grad` for many states on one support batch, without autograd (first-order steps).

        Everything that depends only on the support (the item gathers, the positives' mean, the rating design) is
        computed once here; each call of the returned function then costs two catalog GEMMs and one softmax.
        ``rating=False`` skips the rating terms: the rating block's gradient is returned as 0 (for callers whose
        rating block does not move, e.g. ``rating_solver="ridge"``, whose gradient steps have rate 0 there).
        Equal to :meth:`analytic_grad` to float rounding (tests/adapters/test_mf_fast.py), not differentiable.

        Example
        -------
        >>> import torch
        >>> from adapters.models import FeatureTables
        >>> m = MFAdapter(MFConfig(dim=4, rating_dim=2), n_items=6, tables=FeatureTables.empty(6), inner=InnerConfig())
        >>> sb = SupportBatch.from_lists([[1, 2], []], [[5.0, float("nan")], []])
        >>> s = m.init_states(sb.users).detach()
        >>> torch.allclose(m.analytic_grad_fn(sb)(s), m.analytic_grad(s, sb).detach(), atol=1e-6)
        True
        """
        cfg = self.config
        d, r = cfg.dim, cfg.rating_dim
        with torch.no_grad():
            items = support.items
            q_all = self.item_emb.detach()
            q = q_all[1:]  # rows 1.. of a contiguous table: a contiguous view, no copy
            bias = self.item_bias.detach()[1:]
            rank_valid = (support.mask & (items > 0)).to(q.dtype)
            n_rank = rank_valid.sum(1, keepdim=True)
            has_rank = (n_rank > 0).to(q.dtype)
            # mean of the positives' rows, summed without materialising the gathered [B, L, dim] rows
            mean_pos = nn.functional.embedding_bag(items, q_all, mode="sum",
                                                   per_sample_weights=rank_valid / n_rank.clamp(min=1))
            if rating:
                rated = (support.mask & support.rated).to(q.dtype)
                r_items = self.item_rate.detach()[items]  # [B, L, r]
                r_rated = r_items * rated[..., None]
                # err_j = rated_j · (μ + b_u + d_j + v·R_j − y_j) = r_rated_j·v + rated_j·b_u + offset_j
                offset = (self.global_mean.detach() + self.item_rate_bias.detach()[items] - support.ratings) * rated
                scale = 2.0 * cfg.rating_weight / rated.sum(1, keepdim=True).clamp(min=1)

        work: list[torch.Tensor] = []  # one [B, N-1] buffer for every step's logits and softmax (fresh multi-MB
        # allocations cost page faults that take as long as the GEMMs)

        def grad(states: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                u = states[:, :d]
                if not work or work[0].shape[0] != u.shape[0]:
                    work[:] = [torch.empty(u.shape[0], q.shape[0], dtype=q.dtype)]
                p = torch.softmax(torch.addmm(bias, u, q.t(), out=work[0]), dim=1, out=work[0])  # in place
                gu = torch.mm(p, q).mul_(has_rank).sub_(mean_pos)
                if cfg.rank_weight != 1.0:
                    gu.mul_(cfg.rank_weight)
                if not rating:
                    return torch.cat([gu, gu.new_zeros(gu.shape[0], states.shape[1] - d)], dim=1)
                v, b = states[:, d:d + r], states[:, d + r:d + r + 1]
                err = torch.bmm(r_rated, v[:, :, None])[..., 0].add_(rated * b).add_(offset)
                gv = torch.bmm(err[:, None, :], r_items)[:, 0].mul_(scale)
                gb = err.sum(1, keepdim=True).mul_(scale)
                return torch.cat([gu, gv, gb], dim=1)

        return grad

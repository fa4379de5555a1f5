"""``melu``: MeLU (Lee et al., KDD 2019) — feature embeddings + decision layers personalized per user.

Global: embeddings of item features (genres multi-hot → linear, release-year code, item id with row 0 =
unknown/new item, zero-initialized so an unseen item is described by its features alone) and of user features
(age, gender, occupation; code 0 = unknown, user row 0 = unknown user). The concatenation
``[e_item; e_user]`` goes through decision layers ``hidden``-``hidden`` (ReLU) and an output layer with two
units: the rating (offset by the global mean) and the ranking score.

User state = the flattened decision + output layers (``16,642`` floats at the defaults); θ0 is their
meta-learned initialization, the same for every user (user features enter through the embeddings).

Support loss = ``rating_weight`` × MSE on rated events + ``rank_weight`` × sampled-softmax cross-entropy of each
support item against a pool of ``n_negatives`` uniformly drawn catalog items (fixed at serving time, redrawn
every step during training). Full-catalog scoring computes the item half of the first layer as one batched
matmul per chunk of users (``E_items @ W1_itemᵀ``), then the two small layers.

Example
-------
>>> import torch
>>> from adapters.models import FeatureTables
>>> from adapters.meta.inner import InnerConfig
>>> m = MeLUAdapter(MeLUConfig(emb_dim=4, hidden=8), n_items=10, tables=FeatureTables.empty(10), inner=InnerConfig())
>>> m.score(m.init_states(torch.tensor([0])), torch.tensor([0])).shape
torch.Size([1, 10])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from adapters.base import SupportBatch
from adapters.meta.inner import InnerConfig
from adapters.models import AdapterModule, FeatureTables


@dataclass
class MeLUConfig:
    emb_dim: int = 32  #: size of each feature embedding
    hidden: int = 64  #: width of the two decision layers
    rank_weight: float = 0.3
    rating_weight: float = 1.0
    n_negatives: int = 128  #: sampled-softmax pool size
    rating_min: float = 1.0
    rating_max: float = 5.0
    global_mean: float = 3.5
    score_chunk: int = 64  #: users per chunk in full-catalog scoring


class MeLUAdapter(AdapterModule):
    name = "melu"
    #: no ``ITEM_TABLES``: melu's item side does not grow online (its per-item rows are :meth:`item_row_keys`)
    ITEM_TABLES: tuple[str, ...] = ()

    def __init__(self, config: MeLUConfig, n_items: int, tables: FeatureTables, inner: InnerConfig) -> None:
        super().__init__(n_items, inner)
        self.config = config
        self.rating_min, self.rating_max = float(config.rating_min), float(config.rating_max)
        card = self._cards = tables.cardinalities()
        e, h = config.emb_dim, config.hidden
        self.register_buffer("item_genres", tables.item_genres.clone().float())
        self.register_buffer("item_year", tables.item_year.clone())
        self.register_buffer("user_age", tables.user_age.clone())
        self.register_buffer("user_gender", tables.user_gender.clone())
        self.register_buffer("user_occupation", tables.user_occupation.clone())
        self.genre_lin = nn.Linear(max(card["n_genres"], 1), e, bias=False)
        self.year_emb = nn.Embedding(card["n_years"], e)
        self.id_emb = nn.Embedding(n_items, e)
        nn.init.zeros_(self.id_emb.weight)
        self.age_emb = nn.Embedding(card["n_ages"], e)
        self.gender_emb = nn.Embedding(card["n_genders"], e)
        self.occ_emb = nn.Embedding(card["n_occupations"], e)
        self.d_item, self.d_user = 3 * e, 3 * e
        d_in = self.d_item + self.d_user
        self.shapes = [(h, d_in), (h,), (h, h), (h,), (2, h), (2,)]
        layers = [nn.Linear(d_in, h), nn.Linear(h, h), nn.Linear(h, 2)]
        flat = torch.cat([t.detach().reshape(-1) for lin in layers for t in (lin.weight, lin.bias)])
        self.theta0 = nn.Parameter(flat)
        self.state_dim = int(flat.numel())
        self.global_mean = nn.Parameter(torch.tensor(float(config.global_mean)))
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("neg_pool", torch.randint(1, max(n_items, 2), (config.n_negatives,), generator=gen))
        self._catalog_cache: tuple[tuple[tuple[int, int], ...], torch.Tensor] | None = None
        self._finish()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def item_row_keys(self) -> tuple[str, ...]:
        """The item-id embedding's rows (a warm start copies them by item id: adapters.meta.warmstart)."""
        return ("id_emb.weight",)

    def item_embeddings(self) -> torch.Tensor:
        """:meth:`catalog_embeddings`."""
        return self.catalog_embeddings()

    def reseed(self, seed: int) -> None:
        """Re-draw θ0 and the embeddings from ``seed``."""
        torch.manual_seed(seed)
        h, d_in = self.config.hidden, self.d_item + self.d_user
        layers = [nn.Linear(d_in, h), nn.Linear(h, h), nn.Linear(h, 2)]
        with torch.no_grad():
            self.theta0.copy_(torch.cat([t.reshape(-1) for lin in layers for t in (lin.weight, lin.bias)]))
            for emb in (self.year_emb, self.age_emb, self.gender_emb, self.occ_emb):
                emb.weight.normal_()
            nn.init.kaiming_uniform_(self.genre_lin.weight, a=5 ** 0.5)

    def resample_negatives(self, rng: np.random.Generator) -> None:
        """New uniform negative pool (called every training step)."""
        self.neg_pool.copy_(torch.from_numpy(rng.integers(1, max(self.n_items, 2), self.config.n_negatives)))

    # ---- features ---------------------------------------------------------------------------------
    def item_embed(self, items: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.genre_lin(self.item_genres[items]) if self.item_genres.shape[1] else
                          torch.zeros(*items.shape, self.config.emb_dim),
                          self.year_emb(self.item_year[items]), self.id_emb(items)], dim=-1)

    def catalog_embeddings(self) -> torch.Tensor:
        """``item_embed`` of every row ``[n_items, 3·emb_dim]``. Outside autograd it is computed once per model
        version and reused: the key is the identity and in-place version counter of every tensor it reads, so a
        training step or a weight load recomputes it."""
        sources = (self.genre_lin.weight, self.year_emb.weight, self.id_emb.weight, self.item_genres, self.item_year)
        if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
            return self.item_embed(torch.arange(self.n_items))
        key = tuple((id(t), t._version) for t in sources)
        cached = self._catalog_cache
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self.item_embed(torch.arange(self.n_items)))
            self._catalog_cache = cached
        return cached[1]

    def user_embed(self, users: torch.Tensor) -> torch.Tensor:
        users = users.long().clamp(0, self.user_age.shape[0] - 1)
        return torch.cat([self.age_emb(self.user_age[users]), self.gender_emb(self.user_gender[users]),
                          self.occ_emb(self.user_occupation[users])], dim=-1)

    def init_states(self, users: torch.Tensor) -> torch.Tensor:
        return self.theta0.expand(users.shape[0], -1)

    def _layers(self, states: torch.Tensor) -> list[torch.Tensor]:
        out, at, b = [], 0, states.shape[0]
        for shape in self.shapes:
            n = int(np.prod(shape))
            out.append(states[:, at:at + n].reshape(b, *shape))
            at += n
        return out

    def _mlp(self, states: torch.Tensor, users: torch.Tensor, e_items: torch.Tensor) -> torch.Tensor:
        """``[B, C, 2]`` outputs for item embeddings ``e_items`` (``[B, C, d]`` or shared ``[C, d]``)."""
        w1, b1, w2, b2, wo, bo = self._layers(states)
        w1i, w1u = w1[:, :, :self.d_item], w1[:, :, self.d_item:]
        hu = torch.bmm(w1u, self.user_embed(users)[:, :, None]).squeeze(-1) + b1  # [B, H]
        h = torch.matmul(e_items, w1i.transpose(1, 2))  # [B, C, H]
        h = F.relu(h + hu[:, None, :])
        h = F.relu(torch.baddbmm(b2[:, None, :], h, w2.transpose(1, 2)))
        return torch.baddbmm(bo[:, None, :], h, wo.transpose(1, 2))

    # ---- scores -----------------------------------------------------------------------------------
    def _score(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        if candidates is not None:
            return self._mlp(states, users, self.item_embed(candidates))[..., 1]
        e_all = self.catalog_embeddings()
        step = self.config.score_chunk
        return torch.cat([self._mlp(states[s:s + step], users[s:s + step], e_all)[..., 1]
                          for s in range(0, states.shape[0], step)]) if states.shape[0] else \
            torch.zeros(0, self.n_items)

    def _predict(self, states: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.global_mean + self._mlp(states, users, self.item_embed(items))[..., 0]

    def batch_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        items = support.items
        b, length = items.shape
        pool = self.neg_pool.expand(b, -1)
        out = self._mlp(states, support.users, self.item_embed(torch.cat([items, pool], 1)))
        rating = self.global_mean + out[:, :length, 0]
        z_pos, z_neg = out[:, :length, 1], out[:, length:, 1]
        rated = (support.mask & support.rated).to(states.dtype)
        rank_valid = (support.mask & (items > 0)).to(states.dtype)
        mse = (((rating - support.ratings) * rated) ** 2).sum(1) / rated.sum(1).clamp(min=1)
        ce = (F.softplus(torch.logsumexp(z_neg, 1, keepdim=True) - z_pos) * rank_valid).sum(1) \
            / rank_valid.sum(1).clamp(min=1)
        return self.config.rating_weight * mse + self.config.rank_weight * ce

"""Models that implement :class:`adapters.base.Adapter`: ``seq`` (the default), ``mf`` and ``melu``.

Shared here: :class:`FeatureTables` (side information aligned with item/user rows), the common base
class :class:`AdapterModule` (state (de)serialization, the batched ``adapt`` entry point, the defaults of the
:class:`~adapters.base.Adapter` members a model has nothing for) and the registry :func:`build_model`.

Example
-------
>>> from adapters.models import build_model, FeatureTables
>>> model = build_model("mf", n_items=10, tables=FeatureTables.empty(10), config={"dim": 8, "rating_dim": 4})
>>> model.state_dim
13
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from adapters.base import GradFn, SupportBatch
from adapters.errors import MetarecError
from adapters.meta.inner import InnerConfig, inner_loop, support_gradient
from adapters.meta.rates import Adaptation


@dataclass
class FeatureTables:
    """Side information aligned with the model's rows (row 0 = unknown item / unknown user).

    Categorical codes are dense indices where 0 means *unknown*; ``genres`` is multi-hot.
    """

    item_genres: torch.Tensor  #: float32 [n_items, G] (G may be 0)
    item_year: torch.Tensor  #: long [n_items], 0 = unknown, else 1..n_years
    user_age: torch.Tensor  #: long [n_users], 0 = unknown
    user_gender: torch.Tensor  #: long [n_users]
    user_occupation: torch.Tensor  #: long [n_users]

    @property
    def n_items(self) -> int:
        return int(self.item_year.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_age.shape[0])

    def cardinalities(self) -> dict[str, int]:
        """Sizes needed to rebuild embedding tables (each includes the unknown code 0)."""
        def card(t: torch.Tensor) -> int:
            return int(t.max()) + 1 if t.numel() else 1
        return {"n_items": self.n_items, "n_users": self.n_users, "n_genres": int(self.item_genres.shape[1]),
                "n_years": card(self.item_year), "n_ages": card(self.user_age),
                "n_genders": card(self.user_gender), "n_occupations": card(self.user_occupation)}

    @staticmethod
    def empty(n_items: int, n_users: int = 1, n_genres: int = 0) -> FeatureTables:
        """Tables with every feature unknown (a dataset without side information)."""
        return FeatureTables(torch.zeros(n_items, n_genres), torch.zeros(n_items, dtype=torch.long),
                             torch.zeros(n_users, dtype=torch.long), torch.zeros(n_users, dtype=torch.long),
                             torch.zeros(n_users, dtype=torch.long))


class AdapterModule(nn.Module, ABC):
    """Base of the concrete adapters: the model-independent members of :class:`~adapters.base.Adapter` and the
    defaults of a model that has nothing to offer.

    Subclasses define ``name``, ``state_dim``, :meth:`init_states`, :meth:`batch_loss` (differentiable per-user
    loss), :meth:`_score`/:meth:`_predict` (differentiable) and :meth:`config_dict`, set ``rating_min``/``rating_max``
    and end their constructor with :meth:`_finish`; they override the defaults they have something for.
    """

    name: str = ""
    state_dim: int = 0
    rating_min: float = 1.0
    rating_max: float = 5.0
    #: the state entries of the rating block (their inner rate is ``inner.lr_rating``); None = no such block
    rating_block: slice | None = None
    #: the per-item tables (one row per item row): what grows with an online vocabulary and what a new row resets
    ITEM_TABLES: tuple[str, ...] = ()

    def __init__(self, n_items: int, inner: InnerConfig) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.inner = inner

    def _finish(self) -> None:
        """Last step of a subclass's constructor: check that the model can adapt as ``inner`` says, and give it the
        configured inner rates and prior (a meta-learner or a checkpoint replaces them with the ones it owns)."""
        if self.inner.rating_solver != "gd" and self.rating_block is None:
            raise MetarecError(f"model {self.name} has no closed-form rating block: rating solver must be gd, "
                               f"not {self.inner.rating_solver}")
        if self.inner.task_learner == "bayes" and self.rating_block is None:
            raise MetarecError(f"model {self.name} has no closed-form rating block: the bayes task learner "
                               f"needs mf or seq")
        #: how many parameters the model had when it still carried the inner rates after them (before a subclass's
        #: own, seq's context): where the gradient clip of training counts the meta-learner's (bit-identical seeds)
        self.rates_slot = len(list(self.parameters()))
        self.adaptation = Adaptation.configured(self.state_dim, self.inner, self.rating_block, self.derived_block)

    #: the inner loop's ranking task: "window" (the support loss is :meth:`batch_loss`) or seq's "next"
    support_task: str = "window"

    def inner_lr(self) -> torch.Tensor:
        """Inner learning rates: per parameter ``[state_dim]`` (all equal unless Meta-SGD learned them), or per step
        and parameter ``[steps, state_dim]`` when MAML++ learned them (the inner loop uses row ``k`` at step ``k`` and
        the last row beyond the trained number of steps); those of :attr:`adaptation`."""
        return self.adaptation.rates()

    @property
    def derived_block(self) -> slice | None:
        return None

    def prepare_states(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        return states

    # ---- losses -----------------------------------------------------------------------------------
    @abstractmethod
    def batch_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """Differentiable per-user support loss ``[B]``."""

    def pretrain_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        return self.batch_loss(states, support)

    def support_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """The inner loop's per-user loss ``[B]``: :meth:`batch_loss` unless the model's support task differs from
        its query task (seq's ``support="next"``)."""
        return self.batch_loss(states, support)

    def forward(self, states: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, mask: torch.Tensor,
                rated: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Per-user support loss from plain tensors (the entry point of ``torch.func.functional_call``)."""
        return self.support_loss(states, SupportBatch(items, ratings, mask, rated, users))

    def loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """Per-user support loss ``[B]`` (no proximal term); 0 for an empty support set."""
        return self.batch_loss(states, support)

    def support_grad(self, states: torch.Tensor, support: SupportBatch, create_graph: bool = False,
                     method: str = "auto") -> torch.Tensor:
        """Gradient of each user's support loss w.r.t. that user's state ``[B, state_dim]``."""
        return support_gradient(self, states, support, method=method, create_graph=create_graph)

    def analytic_grad(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor | None:
        return None

    def analytic_grad_fn(self, support: SupportBatch, rating: bool = True) -> GradFn | None:
        return None

    def rating_design(self, support: SupportBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        return None

    def adapt(self, states: torch.Tensor, support: SupportBatch, steps: int | None = None,
              prox: float | None = None, theta0: torch.Tensor | None = None) -> torch.Tensor:
        steps = self.inner.steps if steps is None else int(steps)
        prox = self.inner.prox if prox is None else float(prox)
        if states.shape != (support.batch_size, self.state_dim):
            raise ValueError(f"states {tuple(states.shape)} do not match support batch {support.batch_size} "
                             f"x state_dim {self.state_dim}")
        ridge = self.inner.rating_solver == "ridge"
        with torch.no_grad():
            if theta0 is None and (prox > 0 or ridge):  # the anchor: θ0's states of the support's users
                theta0 = self.init_states(support.users)
            lr = self.inner_lr().detach()
        out = inner_loop(self, states.detach(), support, steps=steps, lr=lr, prox=prox, theta0=theta0,
                         create_graph=False, first_order=True, method=self.inner.grad)
        return out.detach()

    # ---- scores -----------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        return self._score(states, users, candidates)

    @torch.no_grad()
    def predict(self, states: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self._predict(states, users, items).clamp(self.rating_min, self.rating_max)

    @abstractmethod
    def init_states(self, users: torch.Tensor) -> torch.Tensor:
        """θ0's user part of each user row ``[B]`` → ``[B, state_dim]``."""

    @abstractmethod
    def _score(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        """:meth:`score`, differentiable."""

    @abstractmethod
    def _predict(self, states: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """:meth:`predict` before clamping, differentiable."""

    def ranking_vectors(self, states: torch.Tensor) -> torch.Tensor | None:
        return None

    def rating_vectors(self, states: torch.Tensor) -> torch.Tensor | None:
        return None

    def window_affinity(self, states: torch.Tensor, support: SupportBatch, rows: torch.Tensor) -> torch.Tensor | None:
        return None

    # ---- the item side ----------------------------------------------------------------------------------
    def item_tables(self) -> list[torch.Tensor]:
        return [self.get_parameter(name) for name in self.ITEM_TABLES]

    def item_row_keys(self) -> tuple[str, ...]:
        return tuple(self.ITEM_TABLES)

    @abstractmethod
    def item_embeddings(self) -> torch.Tensor:
        """``[n_items, e]`` an embedding of every item row (list diversity)."""

    # ---- training hooks -----------------------------------------------------------------------------------
    def reseed(self, seed: int) -> None:
        return None

    def resample_negatives(self, rng: np.random.Generator) -> None:
        return None

    def finalize(self) -> None:
        return None

    # ---- states as bytes -------------------------------------------------------------------------
    def encode_state(self, state: torch.Tensor) -> bytes:
        """Little-endian float32 bytes, ``4 * state_dim`` of them."""
        arr = state.detach().to(torch.float32).reshape(-1).numpy()
        if arr.shape[0] != self.state_dim:
            raise ValueError(f"state has {arr.shape[0]} numbers, expected {self.state_dim}")
        return arr.astype("<f4", copy=False).tobytes()

    def decode_state(self, data: bytes) -> torch.Tensor:
        if len(data) != 4 * self.state_dim:
            raise MetarecError(f"user state of {len(data)} bytes does not fit model {self.name} "
                               f"(expected {4 * self.state_dim})")
        return torch.from_numpy(np.frombuffer(data, dtype="<f4").astype(np.float32))

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """The model's configuration (rebuilds it with :func:`build_model`)."""

    def tables_cardinalities(self) -> dict[str, int]:
        """Sizes of the feature tables this model was built with (saved in checkpoints)."""
        return dict(self._cards)


def build_model(name: str, n_items: int, tables: FeatureTables, config: dict[str, Any] | None = None,
                inner: InnerConfig | dict[str, Any] | None = None) -> AdapterModule:
    """Construct the adapter called ``name`` (one of ``MODEL_NAMES``) from plain configuration."""
    inner_cfg = inner if isinstance(inner, InnerConfig) else InnerConfig(**(inner or {}))
    if name == "mf":
        from adapters.models.mf import MFAdapter, MFConfig
        return MFAdapter(MFConfig(**(config or {})), n_items, tables, inner_cfg)
    if name == "seq":
        from adapters.models.seq import SeqAdapter, SeqConfig
        return SeqAdapter(SeqConfig(**(config or {})), n_items, tables, inner_cfg)
    if name == "melu":
        from adapters.models.melu import MeLUAdapter, MeLUConfig
        return MeLUAdapter(MeLUConfig(**(config or {})), n_items, tables, inner_cfg)
    raise MetarecError(f"unknown model {name!r} (choose {', '.join(MODEL_NAMES)})")


MODEL_NAMES = ("seq", "mf", "melu")

"""Models that implement :class:`adapters.base.Adapter`: ``seq`` (the default), ``mf`` and ``melu``.

Shared here: :class:`FeatureTables` (side information aligned with item/user rows), the common base
class :class:`AdapterModule` (state (de)serialization, the batched ``adapt`` entry point, learned
per-parameter inner learning rates) and the registry :func:`build_model`.

Example
-------
>>> from adapters.models import build_model, FeatureTables
>>> model = build_model("mf", n_items=10, tables=FeatureTables.empty(10), config={"dim": 8, "rating_dim": 4})
>>> model.state_dim
13
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from adapters.base import SupportBatch
from adapters.errors import MetarecError
from adapters.meta.inner import InnerConfig, inner_loop


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


class AdapterModule(nn.Module):
    """Base of the concrete adapters: everything that does not depend on the model's maths.

    Subclasses define ``name``, ``state_dim``, ``init_states``, ``batch_loss`` (differentiable per-user
    loss), ``_score``/``_predict`` (differentiable), and may override ``support_grad``.
    """

    name: str = ""
    state_dim: int = 0

    def __init__(self, n_items: int, inner: InnerConfig) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.inner = inner
        if inner.rating_solver != "gd" and getattr(self, "rating_design", None) is None:
            raise MetarecError(f"model {self.name} has no closed-form rating block: rating solver must be gd, "
                               f"not {inner.rating_solver}")

    #: the state entries of the rating block (their inner rate is ``inner.lr_rating``); None = no such block
    rating_block: slice | None = None

    def _init_inner_lr(self) -> None:
        log_lr = torch.full((self.state_dim,), math.log(self.inner.lr))
        if self.inner.lr_rating is not None and self.rating_block is not None:
            log_lr[self.rating_block] = math.log(self.inner.lr_rating)
        self.log_lr = nn.Parameter(log_lr, requires_grad=self.inner.metasgd)
        if self.inner.task_learner == "bayes":  # the prior precision Λ0 of the Bayesian task learner, meta-learned
            if self.rating_block is None or getattr(self, "analytic_grad_fn", None) is None:
                raise MetarecError(f"model {self.name} has no closed-form rating block: the bayes task learner "
                                   f"needs mf or seq")
            from adapters.meta.bayes import default_prior_precision
            self.log_prior_prec = nn.Parameter(default_prior_precision(self).log())
        if self.inner.per_step_lr:  # MAML++ (LSLR): one learned row of rates per inner step, all starting at log_lr
            self.log_lr_steps = nn.Parameter(log_lr.repeat(max(self.inner.steps, 1), 1))

    def inner_lr(self) -> torch.Tensor:
        """Inner learning rates: per parameter ``[state_dim]`` (all equal unless Meta-SGD learned them), or per step
        and parameter ``[steps, state_dim]`` when MAML++ learned them (``inner.per_step_lr``; the inner loop uses row
        ``k`` at step ``k`` and the last row beyond the trained number of steps)."""
        return (self.log_lr_steps if self.inner.per_step_lr else self.log_lr).exp()

    # ---- losses -----------------------------------------------------------------------------------
    def batch_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, states: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, mask: torch.Tensor,
                rated: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Per-user loss from plain tensors (the entry point of ``torch.func.functional_call``)."""
        return self.batch_loss(states, SupportBatch(items, ratings, mask, rated, users))

    def loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """Per-user support loss ``[B]`` (no proximal term); 0 for an empty support set."""
        return self.batch_loss(states, support)

    def support_grad(self, states: torch.Tensor, support: SupportBatch, create_graph: bool = False,
                     method: str = "auto") -> torch.Tensor:
        """Gradient of each user's support loss w.r.t. that user's state ``[B, state_dim]``."""
        from adapters.meta.inner import support_gradient
        return support_gradient(self, states, support, method=method, create_graph=create_graph)

    def adapt(self, states: torch.Tensor, support: SupportBatch, steps: int | None = None,
              prox: float | None = None) -> torch.Tensor:
        steps = self.inner.steps if steps is None else int(steps)
        prox = self.inner.prox if prox is None else float(prox)
        if states.shape != (support.batch_size, self.state_dim):
            raise ValueError(f"states {tuple(states.shape)} do not match support batch {support.batch_size} "
                             f"x state_dim {self.state_dim}")
        ridge = self.inner.rating_solver == "ridge"
        with torch.no_grad():
            theta0 = self.init_states(support.users) if prox > 0 or ridge else None
            lr = self.inner_lr().detach()
        out = inner_loop(self, states.detach(), support, steps=steps, lr=lr, prox=prox, theta0=theta0,
                         create_graph=False, first_order=True, method=self.inner.grad)
        return out.detach()

    @torch.no_grad()
    def score(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        return self._score(states, users, candidates)

    @torch.no_grad()
    def predict(self, states: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self._predict(states, users, items).clamp(self.rating_min, self.rating_max)

    def init_states(self, users: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _score(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def _predict(self, states: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

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

    def config_dict(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

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

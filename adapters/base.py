"""The one interface between the learning side and everything that uses it.

Training, offline evaluation, the stream worker and the benchmark all talk to a model through
:class:`Adapter`. A *user state* is one flat ``float32`` vector of ``Adapter.state_dim`` numbers: the
personalized parameters of one user (for ``mf`` the user vector and bias; for ``melu`` the decision layers).
A batch of users is a ``[B, state_dim]`` tensor. Everything that is not per user (item embeddings, feature
embeddings, the initialization θ0) lives in the adapter itself; the inner rates and the Bayesian prior precision
belong to meta-learning (:mod:`adapters.meta.rates`) and reach the adapter as its :attr:`Adapter.adaptation`.

Indices, not ids: items are rows of the model's item table, where row 0 is the *unknown item* (an id never
seen in training, or padding) and rows ``1 .. n_items-1`` are the catalog. Users are rows of the user-feature
table, where row 0 is the *unknown user* (no features). Mapping string ids to rows is the job of the
:class:`~adapters.meta.checkpoint.Checkpoint` vocabularies.

Example
-------
>>> import torch
>>> from adapters.base import SupportBatch
>>> support = SupportBatch.from_lists(
...     items=[[3, 5, 7], [2]], ratings=[[4.0, 5.0, float("nan")], [1.0]], users=[1, 0])
>>> support.items.shape, support.mask.tolist()
(torch.Size([2, 3]), [[True, True, True], [True, False, False]])
>>> support.rated.tolist()   # NaN rating = implicit event: it counts for ranking, not for the rating loss
[[True, True, False], [True, False, False]]
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

if TYPE_CHECKING:
    from adapters.meta.innerconfig import InnerConfig
    from adapters.meta.rates import Adaptation


@dataclass(frozen=True)
class SupportBatch:
    """Padded support sets of ``B`` users, each at most ``L`` events long.

    Attributes
    ----------
    items : LongTensor ``[B, L]``
        Item rows (``0`` = unknown item, also used as padding).
    ratings : FloatTensor ``[B, L]``
        Explicit ratings; any value where ``rated`` is False is ignored.
    mask : BoolTensor ``[B, L]``
        True where an event is present (padding is False).
    rated : BoolTensor ``[B, L]``
        True where the event carries an explicit rating (implicit events only train the ranking objective).
    users : LongTensor ``[B]``
        User-feature rows (``0`` = unknown user).
    """

    items: torch.Tensor
    ratings: torch.Tensor
    mask: torch.Tensor
    rated: torch.Tensor
    users: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.items.shape[0])

    @staticmethod
    def from_lists(items: Sequence[Sequence[int]], ratings: Sequence[Sequence[float]],
                   users: Sequence[int] | None = None, length: int | None = None) -> SupportBatch:
        """Pad ragged per-user lists into a batch. A NaN rating marks an implicit event."""
        b = len(items)
        length = max([len(x) for x in items] + [1]) if length is None else length
        it = torch.zeros(b, length, dtype=torch.long)
        rt = torch.zeros(b, length, dtype=torch.float32)
        mk = torch.zeros(b, length, dtype=torch.bool)
        rd = torch.zeros(b, length, dtype=torch.bool)
        for n, (xs, ys) in enumerate(zip(items, ratings)):
            xs, ys = list(xs)[-length:], list(ys)[-length:]
            k = len(xs)
            if k:
                it[n, :k] = torch.as_tensor(xs, dtype=torch.long)
                y = torch.as_tensor(ys, dtype=torch.float32)
                finite = ~torch.isnan(y)
                rt[n, :k] = torch.where(finite, y, torch.zeros_like(y))
                mk[n, :k] = True
                rd[n, :k] = finite
        us = torch.zeros(b, dtype=torch.long) if users is None else torch.as_tensor(list(users), dtype=torch.long)
        return SupportBatch(items=it, ratings=rt, mask=mk, rated=rd, users=us)

    def select(self, index: torch.Tensor | slice) -> SupportBatch:
        """The sub-batch of the users at ``index``."""
        return SupportBatch(self.items[index], self.ratings[index], self.mask[index], self.rated[index],
                            self.users[index])


#: the gradient of each user's support loss at a batch of states, ``[B, state_dim]`` → ``[B, state_dim]``
GradFn = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class Adapter(Protocol):
    """A model whose per-user part adapts in a few gradient steps from a meta-learned θ0.

    Implementations: :class:`adapters.models.seq.SeqAdapter` (the default), :class:`adapters.models.mf.MFAdapter`,
    :class:`adapters.models.melu.MeLUAdapter`, all through :class:`adapters.models.AdapterModule`, which implements
    the model-independent members and gives the defaults of a model that has nothing to offer (``None``, ``[]``,
    identity, no-op). Every member is there for every model: callers never ask whether a model has one.
    All methods are batched over users and pure with respect to user states (they never mutate their inputs).
    """

    name: str  #: model name, ``"seq"``, ``"mf"`` or ``"melu"``
    n_items: int  #: rows of the item table, including row 0 (unknown item)
    state_dim: int  #: length of one user state vector
    inner: InnerConfig  #: the inner loop's defaults (steps, rates, proximal pull, rating solver, task learner)
    rating_min: float  #: lowest rating :meth:`predict` returns
    rating_max: float  #: highest rating :meth:`predict` returns
    #: the inner loop's ranking task: ``"window"`` (:meth:`support_loss` is :meth:`batch_loss`) or seq's ``"next"``
    support_task: str
    #: the state entries of the closed-form rating block (linear in the rating: :meth:`rating_design`); None = the
    #: model has none (melu), so neither the ridge rating solver nor the bayes task learner applies
    rating_block: slice | None
    #: names of the per-item parameter tables that grow with an online vocabulary (``()``: none, melu)
    ITEM_TABLES: tuple[str, ...]
    #: the inner rates and (bayes) prior precision this model adapts with, owned by meta-learning
    #: (:mod:`adapters.meta.rates`)
    adaptation: Adaptation

    # ---- θ0 and adaptation ---------------------------------------------------------------------------------
    def init_states(self, users: torch.Tensor) -> torch.Tensor:
        """θ0's user part for each user row in ``users`` (``[B]`` → ``[B, state_dim]``)."""
        ...

    def adapt(self, states: torch.Tensor, support: SupportBatch, steps: int | None = None,
              prox: float | None = None, theta0: torch.Tensor | None = None) -> torch.Tensor:
        """``steps`` inner-loop gradient steps on each user's support set, all users in one batched call.

        Starts from ``states`` (θ0's user part for a cold start, the previous state for a warm start) and
        adds the proximal term ``prox * ||state - θ0_user||²`` (``theta0``: θ0's states of the support's users, when
        the caller has them; None: computed here). Users with an empty support set keep their
        state. ``None`` means the adapter's configured defaults. The rates are :meth:`inner_lr`'s (learned ones
        when the checkpoint's meta-learner learned them). Returns new states; inputs are untouched.
        """
        ...

    def inner_lr(self) -> torch.Tensor:
        """The inner rates :meth:`adapt` steps with: ``[state_dim]`` or ``[steps, state_dim]`` (per step)."""
        ...

    @property
    def derived_block(self) -> slice | None:
        """The state entries that are not adapted but derived from the window by :meth:`prepare_states` (seq: the
        context; their inner rate is 0, and the window is an input of the model there); None: no such entries."""
        ...

    def prepare_states(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """``states`` with their derived entries set from ``support`` before any step (seq: the window's context);
        the identity for a model without derived entries."""
        ...

    # ---- losses and gradients ---------------------------------------------------------------------------------
    def loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """Per-user inner-loop loss on the support set (without the proximal term) → ``[B]``."""
        ...

    def batch_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """:meth:`loss`, differentiable w.r.t. the states and the model's parameters (the meta-learners' loss)."""
        ...

    def support_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """The inner loop's per-user loss ``[B]``, differentiable: :meth:`batch_loss` unless the model's support task
        (:attr:`support_task`) is not its query task (seq's next-item task)."""
        ...

    def pretrain_loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """The loss of the item-side pre-training (:func:`adapters.meta.training.pretrain_mf`): :meth:`batch_loss`
        unless the model's window part must stay out of it (seq)."""
        ...

    def support_grad(self, states: torch.Tensor, support: SupportBatch, create_graph: bool = False,
                     method: str = "auto") -> torch.Tensor:
        """Gradient of each user's support loss w.r.t. that user's state ``[B, state_dim]``."""
        ...

    def analytic_grad(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor | None:
        """Closed-form per-user gradient of :meth:`batch_loss` (differentiable); None: autograd only."""
        ...

    def analytic_grad_fn(self, support: SupportBatch, rating: bool = True) -> GradFn | None:
        """The closed-form gradient for many states on one support batch, without autograd (first-order steps;
        ``rating=False`` skips the rating block's terms); None: autograd only."""
        ...

    def rating_design(self, support: SupportBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The rating loss as weighted least squares in :attr:`rating_block`: design ``[B, L, k]``, targets and
        weights ``[B, L]``; None when :attr:`rating_block` is None."""
        ...

    # ---- scores -----------------------------------------------------------------------------------------------
    def score(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Ranking scores (higher = recommend first).

        ``candidates`` ``[B, C]`` item rows, or None for the whole item table (``[B, n_items]``; the caller masks
        column 0 and anything it must exclude).
        """
        ...

    def predict(self, states: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted explicit ratings of ``items`` ``[B, C]`` → ``[B, C]``."""
        ...

    def ranking_vectors(self, states: torch.Tensor) -> torch.Tensor | None:
        """``[B, d]`` the vectors whose dot product with an item's ranking embedding ranks it (mf: ``u``; seq:
        ``u + g·ctx``); None: the model ranks otherwise (melu's decision layers)."""
        ...

    def rating_vectors(self, states: torch.Tensor) -> torch.Tensor | None:
        """``[B, r]`` the vectors whose dot product with an item's rating factors predicts its rating (mf, seq:
        ``v``); None: none (melu)."""
        ...

    def window_affinity(self, states: torch.Tensor, support: SupportBatch, rows: torch.Tensor) -> torch.Tensor | None:
        """``[B, L, k]`` the learned part of the score of each listed item ``rows`` ``[B, k]`` that each window
        position contributes (seq: ``g · a_l · K_{j_l}·Q_i``; :mod:`adapters.online.explain`); None: no such part."""
        ...

    # ---- the item side ----------------------------------------------------------------------------------------
    def item_tables(self) -> list[torch.Tensor]:
        """The per-item parameter tensors, in :attr:`ITEM_TABLES` order (``[]``: none)."""
        ...

    def item_row_keys(self) -> tuple[str, ...]:
        """State-dict keys of every per-item table (one row per item row), which a warm start copies by item id."""
        ...

    def item_embeddings(self) -> torch.Tensor:
        """``[n_items, e]`` an embedding of every item row (list diversity): mf/seq their ranking embeddings, melu
        its feature embeddings of the catalog."""
        ...

    # ---- training hooks (no-ops where a model has nothing to do) --------------------------------------------
    def reseed(self, seed: int) -> None:
        """Re-draw the randomly initialised parameters from ``seed`` (before training)."""
        ...

    def resample_negatives(self, rng: np.random.Generator) -> None:
        """Draw new negative items for the support loss (every training step; melu's sampled softmax)."""
        ...

    def finalize(self) -> None:
        """Last step of training, after the item rows were reset."""
        ...

    # ---- states as bytes, configuration -------------------------------------------------------------------
    def encode_state(self, state: torch.Tensor) -> bytes:
        """One user state ``[state_dim]`` → compact bytes (exact round trip with :meth:`decode_state`)."""
        ...

    def decode_state(self, data: bytes) -> torch.Tensor:
        """Bytes from :meth:`encode_state` → ``[state_dim]`` float32 tensor."""
        ...

    def config_dict(self) -> dict[str, Any]:
        """The model's configuration (saved in checkpoints, rebuilds the model)."""
        ...

    def tables_cardinalities(self) -> dict[str, int]:
        """Sizes of the feature tables the model was built with (saved in checkpoints)."""
        ...

"""The one interface between the learning side and everything that uses it.

Training, offline evaluation, the stream worker and the benchmark all talk to a model through
:class:`Adapter`. A *user state* is one flat ``float32`` vector of ``Adapter.state_dim`` numbers: the
personalized parameters of one user (for ``mf`` the user vector and bias; for ``melu`` the decision layers).
A batch of users is a ``[B, state_dim]`` tensor. Everything that is not per user (item embeddings, feature
embeddings, the initialization θ0, learned inner learning rates) lives in the adapter itself.

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


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


@runtime_checkable
class Adapter(Protocol):
    """A model whose per-user part adapts in a few gradient steps from a meta-learned θ0.

    Implementations: :class:`adapters.models.seq.SeqAdapter` (the default), :class:`adapters.models.mf.MFAdapter`,
    :class:`adapters.models.melu.MeLUAdapter`.
    All methods are batched over users and pure with respect to user states (they never mutate their inputs).
    """

    name: str  #: model name, ``"seq"``, ``"mf"`` or ``"melu"``
    n_items: int  #: rows of the item table, including row 0 (unknown item)
    state_dim: int  #: length of one user state vector

    def init_states(self, users: torch.Tensor) -> torch.Tensor:
        """θ0's user part for each user row in ``users`` (``[B]`` → ``[B, state_dim]``)."""
        ...

    def adapt(self, states: torch.Tensor, support: SupportBatch, steps: int | None = None,
              prox: float | None = None) -> torch.Tensor:
        """``steps`` inner-loop gradient steps on each user's support set, all users in one batched call.

        Starts from ``states`` (θ0's user part for a cold start, the previous state for a warm start) and
        adds the proximal term ``prox * ||state - θ0_user||²``. Users with an empty support set keep their
        state. ``None`` means the adapter's configured defaults. Returns new states; inputs are untouched.
        """
        ...

    def score(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Ranking scores (higher = recommend first).

        ``candidates`` ``[B, C]`` item rows, or None for the whole item table (``[B, n_items]``; the caller masks
        column 0 and anything it must exclude).
        """
        ...

    def predict(self, states: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted explicit ratings of ``items`` ``[B, C]`` → ``[B, C]``."""
        ...

    def loss(self, states: torch.Tensor, support: SupportBatch) -> torch.Tensor:
        """Per-user inner-loop loss on the support set (without the proximal term) → ``[B]``."""
        ...

    def encode_state(self, state: torch.Tensor) -> bytes:
        """One user state ``[state_dim]`` → compact bytes (exact round trip with :meth:`decode_state`)."""
        ...

    def decode_state(self, data: bytes) -> torch.Tensor:
        """Bytes from :meth:`encode_state` → ``[state_dim]`` float32 tensor."""
        ...

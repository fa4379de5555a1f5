"""Item freshness: the item side of the online path, kept current from the stream itself.

θ0's item terms are frozen at training time, but item popularity drifts (new releases rise, old hits fade) and so
do item rating biases. :class:`ItemFreshness` follows both from the events the learner processes, vectorised over
each micro-batch and O(n_items) per batch at most:

* ranking: exponentially decayed item counts ``n_i`` (half-life in events); the ranking score gains
  ``weight · log(1 + n_i)``;
* rating: an online correction ``δ_i`` of each item's rating bias, one SGD step per rated event on the squared
  error of the prediction made *before* learning the event (``δ_i += lr · (err − reg · δ_i)``, as River's
  BiasedMF does with its item biases); with ``rating_prior`` > 0 an item's rate starts at ``1 / (m_i + prior)``
  (``m_i`` = its rated events seen online: a shrunk running mean of its residuals) and settles to ``rating_lr``.

Both are shared by all users and live in the learner (one process): they are not part of a user record and are
not durable. A restarted worker starts from the counts stored in the checkpoint (those at the end of its training
data); in a deployment with several worker processes, each follows the items of its own partitions' users.

Example
-------
>>> import numpy as np
>>> f = ItemFreshness(n_items=4, weight=1.0, half_life=2.0)
>>> f.observe(np.array([1, 1, 2]))
>>> [round(x, 3) for x in f.counts.tolist()]   # the newest event counts 1, one event older 2^(-1/2)
[0.0, 1.207, 1.0, 0.0]
>>> float(f.bonus()[1]) > float(f.bonus()[2]) > float(f.bonus()[3])
True
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from adapters.errors import MetarecError


@dataclass(frozen=True)
class FreshnessConfig:
    """How strongly the item side follows the stream (stored in checkpoints under ``"freshness"``)."""

    weight: float = 0.0  #: β of the ranking bonus β·log(1 + decayed count); 0 = off
    half_life: float = 5_000.0  #: half-life of the item counts, in events
    rating_lr: float = 0.0  #: online learning rate of the item rating-bias correction; 0 = off
    rating_reg: float = 0.0  #: L2 pull of the correction toward 0
    #: > 0: item ``i``'s correction rate is ``max(rating_lr, 1 / (m_i + rating_prior))`` with ``m_i`` its rated events
    #: seen online (a running mean of its residuals, shrunk toward 0 as if ``rating_prior`` residuals were 0, that
    #: settles to the constant rate ``rating_lr``); 0 = the constant rate ``rating_lr``
    rating_prior: float = 0.0

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise MetarecError(f"freshness weight must be ≥ 0, got {self.weight}")
        if not self.half_life > 0:
            raise MetarecError(f"freshness half-life must be > 0 events, got {self.half_life}")
        if not self.rating_lr >= 0 or not self.rating_reg >= 0 or not self.rating_prior >= 0:
            raise MetarecError("freshness rating lr, reg and prior must be ≥ 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FreshnessConfig:
        d = dict(d or {})
        return cls(**{k: float(d[k]) for k in ("weight", "half_life", "rating_lr", "rating_reg", "rating_prior")
                     if k in d})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def decayed_counts(rows: np.ndarray, n_items: int, half_life: float) -> np.ndarray:
    """Decayed counts after the events ``rows`` (in order): the last one weighs 1, each earlier one 2^(-1/half_life) less."""
    rows = np.asarray(rows, dtype=np.int64)
    age = (len(rows) - 1 - np.arange(len(rows))) / half_life
    counts = np.bincount(rows, weights=np.exp2(-age), minlength=n_items).astype(np.float64)
    counts[0] = 0.0
    return counts


class ItemFreshness:
    """Decayed item counts and item rating-bias corrections of one learner (see the module docstring)."""

    def __init__(self, n_items: int, weight: float = 0.0, half_life: float = 5_000.0, rating_lr: float = 0.0,
                 rating_reg: float = 0.0, counts: np.ndarray | None = None, rating_prior: float = 0.0) -> None:
        self.config = FreshnessConfig(weight, half_life, rating_lr, rating_reg, rating_prior)
        self.n_items = int(n_items)
        self.counts = np.zeros(self.n_items) if counts is None else np.asarray(counts, dtype=np.float64).copy()
        if self.counts.shape != (self.n_items,):
            raise MetarecError(f"freshness counts have shape {self.counts.shape}, expected ({self.n_items},)")
        self.rating_delta = np.zeros(self.n_items, dtype=np.float32)
        self.rated_seen = np.zeros(self.n_items, dtype=np.float64)  #: rated events per item learned online
        self._bonus: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        return self.config.weight > 0

    def observe(self, rows: np.ndarray, errors: np.ndarray | None = None) -> None:
        """Learn a micro-batch: item rows in event order (0 = unknown, ignored) and, optionally, the pre-update
        rating errors ``prediction − rating`` of those events (NaN = not rated)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        cfg = self.config
        self.counts *= np.exp2(-len(rows) / cfg.half_life)
        self.counts += decayed_counts(rows, self.n_items, cfg.half_life)
        self._bonus = None
        if errors is not None and cfg.rating_lr > 0:
            errors = np.asarray(errors, dtype=np.float64)
            ok = (rows > 0) & np.isfinite(errors)
            if ok.any():
                r, e = rows[ok], errors[ok]
                step = np.bincount(r, weights=-e, minlength=self.n_items)
                hits = np.bincount(r, minlength=self.n_items)
                touched = hits > 0
                step[touched] -= cfg.rating_reg * hits[touched] * self.rating_delta[touched]
                self.rated_seen += hits
                lr = cfg.rating_lr
                if cfg.rating_prior > 0:
                    lr = np.maximum(cfg.rating_lr, 1.0 / (self.rated_seen + cfg.rating_prior))
                self.rating_delta += (lr * step).astype(np.float32)

    def resize(self, n_items: int) -> None:
        """Grow the per-item arrays to ``n_items`` rows (new rows start at zero)."""
        extra = int(n_items) - self.n_items
        if extra <= 0:
            return
        self.counts = np.concatenate([self.counts, np.zeros(extra)])
        self.rating_delta = np.concatenate([self.rating_delta, np.zeros(extra, np.float32)])
        self.rated_seen = np.concatenate([self.rated_seen, np.zeros(extra)])
        self.n_items = int(n_items)
        self._bonus = None

    def clear(self, rows: list[int]) -> None:
        """Forget the items of ``rows`` (evicted rows that another item will reuse)."""
        if rows:
            self.counts[rows] = 0.0
            self.rating_delta[rows] = 0.0
            self.rated_seen[rows] = 0.0
            self._bonus = None

    def bonus(self) -> torch.Tensor:
        """``[n_items]`` float32 ranking bonus β·log(1 + n_i) (zeros when the weight is 0)."""
        if self._bonus is None:
            self._bonus = torch.from_numpy((self.config.weight * np.log1p(self.counts)).astype(np.float32))
        return self._bonus

    def remapped(self, old_ids: list[str], new_index: dict[str, int], n_items: int) -> ItemFreshness:
        """The same counts and corrections in another vocabulary's rows (items it does not know are dropped)."""
        table = np.array([new_index.get(i, 0) for i in old_ids], dtype=np.int64)
        out = ItemFreshness(n_items, **self.config.to_dict())
        np.add.at(out.counts, table, self.counts)
        np.add.at(out.rating_delta, table, self.rating_delta)
        np.add.at(out.rated_seen, table, self.rated_seen)
        out.counts[0] = 0.0
        out.rating_delta[0] = 0.0
        return out

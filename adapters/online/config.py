"""What goes into and out of the online learner (:mod:`adapters.online.learner`): its settings, events, lists, results.

Example
-------
>>> OnlineConfig(top_k=5).window
32
>>> Interaction("u1", "50", 5.0, 8.8e8).offset   # no input position: never deduplicated
-1
"""
from __future__ import annotations

from dataclasses import dataclass, field

from typing import Any

from adapters.errors import MetarecError
from adapters.online.items.contributions import Contributions
from adapters.online.records import UserRecord


@dataclass(frozen=True)
class OnlineConfig:
    """Settings of the online path (the worker's and the prequential evaluation's)."""

    window: int = 32  #: events per user kept as the support set
    max_age: float | None = None  #: seconds: drop window events older than this before the user's newest event
    steps: int | None = None  #: inner-loop steps per micro-batch (None = the checkpoint's; 0 = no adaptation)
    prox: float | None = None  #: proximal pull toward θ0 (None = the checkpoint's default)
    top_k: int = 10  #: list length
    max_catalog: int = 50_000  #: rank the full catalog up to this many items ...
    retrieval_m: int = 2_000  #: ... above it, re-rank only the top-M items by θ0 score
    #: the item state's settings (adapters.online.items.config.ItemConfig), each None = the checkpoint's
    max_items: int | None = None  #: item rows at most, online items included
    prior_weight: float | None = None  #: weight of the co-occurrence prior (0 = off)
    popularity_weight: float | None = None  #: weight of the item-popularity bonus (0 = off)
    item_half_life: float | None = None  #: half-life of item popularity, seconds of event time
    embed_lr: float | None = None  #: SGD rate of the items' ranking rows (0 = frozen)
    factor_lr: float | None = None  #: SGD rate of the items' rating factors (0 = frozen)
    bias_lr: float | None = None  #: rate of the items' rating-bias corrections (0 = off)
    negatives: int | None = None  #: sampled negatives of the items' ranking step (0 = the whole catalogue)
    #: the in-process owner's delay in micro-batches: 0 = this process owns its item state (local), 1 = a group's
    #: round trip simulated (the evaluation of shared mode); None = the group's owners merge the contributions
    #: (a worker with --item-state shared sends them and applies the published rows)
    owner_delay: int | None = 0
    item_seed: int = 0  #: seed of the ranking step's negatives
    #: how a user's state adapts: "gradient" or "bayes" (adapters.online.tasklearner); None = the checkpoint's
    task_learner: str | None = None
    explore: str = "none"  #: "none", "thompson" or "ucb" (bayes only): exploration when ranking
    persistence: float | None = None  #: bayes: deviation from θ0 kept between micro-batches (None = the checkpoint's)
    explore_scale: float = 1.0  #: posterior standard deviations per unit of exploration
    explore_seed: int = 0  #: seed of Thompson sampling's draws
    explain: bool = True  #: name, for each listed item, the window item that supports it most (``because``)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise MetarecError(f"window must be ≥ 1, got {self.window}")
        if self.steps is not None and self.steps < 0:
            raise MetarecError(f"steps must be ≥ 0, got {self.steps}")
        if self.top_k < 1:
            raise MetarecError(f"top-k must be ≥ 1, got {self.top_k}")
        if self.max_age is not None and not self.max_age > 0:
            raise MetarecError(f"max-age must be > 0 seconds, got {self.max_age}")
        if self.explore not in ("none", "thompson", "ucb"):
            raise MetarecError(f"explore must be none, thompson or ucb, got {self.explore!r}")
        if self.explore != "none" and self.task_learner == "gradient":
            raise MetarecError(f"--explore {self.explore} samples from the posterior: it needs --task-learner bayes")
        if self.persistence is not None and not 0.0 <= self.persistence < 1.0:
            raise MetarecError(f"--persistence must be in [0, 1), got {self.persistence}")
        if self.prox is not None and not self.prox >= 0:
            raise MetarecError(f"prox must be ≥ 0, got {self.prox}")
        for name in ("prior_weight", "popularity_weight", "embed_lr", "factor_lr", "bias_lr", "negatives"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise MetarecError(f"{name.replace('_', '-')} must be ≥ 0, got {value}")
        if self.item_half_life is not None and not self.item_half_life > 0:
            raise MetarecError(f"item half-life must be > 0 seconds, got {self.item_half_life}")
        if self.owner_delay is not None and self.owner_delay < 0:
            raise MetarecError(f"owner delay must be ≥ 0 micro-batches, got {self.owner_delay}")
        if self.max_items is not None and self.max_items < 2:
            raise MetarecError(f"max-items must be ≥ 2, got {self.max_items}")
        if not self.explore_scale >= 0:
            raise MetarecError(f"explore-scale must be ≥ 0, got {self.explore_scale}")
        if self.retrieval_m < self.top_k:
            raise MetarecError(f"retrieval-m ({self.retrieval_m}) must be ≥ top-k ({self.top_k})")


@dataclass(frozen=True)
class Interaction:
    """One validated input event with its position in the input (offset -1 = no position: never deduplicated)."""

    user_id: str
    item_id: str
    rating: float | None
    timestamp: float
    partition: int = 0
    offset: int = -1


@dataclass(frozen=True)
class Recommendation:
    """A refreshed top-K list; ``partition``/``offset`` name the newest input event it has taken into account."""

    user_id: str
    items: list[str]
    scores: list[float]
    partition: int
    offset: int
    event_timestamp: float
    because: list[str | None] | None = None  #: per listed item, the user's window item that supports it most
    uncertainty: list[float] | None = None  #: per listed item, the posterior std of its score (bayes only)


@dataclass
class BatchResult:
    records: dict[str, UserRecord]  #: the new record of every user with at least one new event
    recommendations: list[Recommendation]
    support_loss: float  #: mean pre-update loss of the current states on the incoming events (NaN if none)
    duplicates: int  #: redelivered events skipped
    unknown_items: int  #: events whose item had no row before the batch (new items: they get one now, up to max_items)
    adapt_seconds: float  #: time in the batched adaptation call
    timings: dict[str, float] = field(default_factory=dict)
    #: shared mode (no in-process owner): the batch's item contributions, for the group's owners
    item_updates: Contributions = field(default_factory=Contributions.empty)


@dataclass
class AppliedBatch:
    """A micro-batch applied to its users' records: what :meth:`~adapters.online.learner.OnlineLearner.process`
    adapts and learns from (internal to it)."""

    touched: dict[str, UserRecord] = field(default_factory=dict)  #: user → updated copy of its record
    fresh: dict[str, list[int]] = field(default_factory=dict)  #: user → indices (into its window) of new events
    newest: dict[str, Interaction] = field(default_factory=dict)  #: user → its newest event of the batch
    new_rows: list[int] = field(default_factory=list)  #: item rows of the new events, in order (item side learns)
    new_users: list[str] = field(default_factory=list)
    new_ratings: list[float] = field(default_factory=list)
    new_windows: list[list[int]] = field(default_factory=list)  #: each new event's user's last items before it
    new_times: list[float] = field(default_factory=list)  #: the new events' times
    duplicates: int = 0  #: redelivered events skipped
    unknown: int = 0  #: new events whose item had no row before the batch

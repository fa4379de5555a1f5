"""The inner loop's settings, :class:`InnerConfig` (kept apart from :mod:`adapters.meta.inner`, which needs the models'
interface, so that the interface itself can name it).

Example
-------
>>> InnerConfig().steps, InnerConfig(rating_solver="ridge").rating_solver
(3, 'ridge')
"""
from __future__ import annotations

from dataclasses import dataclass

from adapters.errors import MetarecError

GRAD_METHODS = ("auto", "analytic", "autograd", "func")
RATING_SOLVERS = ("gd", "ridge")


@dataclass
class InnerConfig:
    """Inner-loop defaults of an adapter (overridable per call of ``adapt``)."""

    steps: int = 3  #: gradient steps per adaptation
    lr: float = 0.1  #: inner learning rate (initial value when Meta-SGD learns per-parameter rates)
    #: learning rate of the model's rating block (``mf``: ``[v | b_u]``); None = ``lr``. The rating MSE's gradient
    #: is ``2·err`` per unit, far steeper than the softmax's, so one shared rate over- or under-shoots one block.
    lr_rating: float | None = None
    prox: float = 0.0  #: λ of the proximal term λ‖θ − θ0‖²
    metasgd: bool = False  #: per-parameter learned learning rates
    #: per-step and per-parameter learned learning rates ``[steps, D]`` (MAML++'s LSLR, :mod:`adapters.meta.mamlpp`)
    per_step_lr: bool = False
    grad: str = "auto"  #: one of GRAD_METHODS; "auto" = analytic when the model has one, else autograd
    #: how the rating block is adapted: "gd" = the gradient steps like every other entry; "ridge" = its exact
    #: minimiser in closed form (:func:`ridge_block`; models with a ``rating_design``, i.e. ``mf``)
    rating_solver: str = "gd"
    ridge_lambda: float = 0.2  #: λ of the ridge solver's pull λ‖s_r − θ0_r‖² (only with ``rating_solver="ridge"``)
    #: ridge solver's data term: True = the support loss's mean over the rated events (λ then weighs more, the more
    #: ratings a user has); False = their sum (a Gaussian prior of fixed precision λ around θ0: the more ratings,
    #: the less the pull)
    ridge_mean: bool = True
    #: how a user's state adapts: "gradient" = the gradient steps below; "bayes" = a Gaussian posterior around θ0 with
    #: a meta-learned prior precision (:mod:`adapters.meta.bayes`; models with a closed-form rating block)
    task_learner: str = "gradient"
    #: bayes: share ρ of a user's deviation from θ0 kept from one micro-batch to the next (adapters.meta.bayes.adapt);
    #: 0.5 ≈ the gradient learner's own contraction, (1 − lr·2·prox)^steps = 0.8³ at the defaults
    persistence: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.persistence < 1.0:
            raise MetarecError(f"persistence must be in [0, 1), got {self.persistence}")
        if self.task_learner not in ("gradient", "bayes"):
            raise MetarecError(f"unknown task learner {self.task_learner!r} (choose gradient or bayes)")
        if self.rating_solver not in RATING_SOLVERS:
            raise MetarecError(f"unknown rating solver {self.rating_solver!r} (choose {' or '.join(RATING_SOLVERS)})")
        if not self.ridge_lambda > 0:
            raise MetarecError(f"ridge lambda must be > 0, got {self.ridge_lambda}")

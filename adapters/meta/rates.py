"""What a task learner learns besides θ0, owned by the meta-learning side: inner rates and the prior precision Λ0.

* :class:`InnerRates` — the gradient task learner's inner learning rates ``α``: *fixed* (maml, fomaml, reptile,
  erm: the configured ``lr``, and ``lr_rating`` on the model's rating block), *per parameter* and learned (Meta-SGD,
  Li et al. 2017: ``log_lr`` ``[state_dim]``), or *per step* and learned (MAML++'s LSLR: ``log_lr_steps``
  ``[K, state_dim]``, every row starting at the configured rates);
* :class:`PriorPrecision` — the Bayesian task learner's meta-learned prior precision ``Λ0 = exp(log_prior_prec)``
  (:mod:`adapters.meta.bayes`);
* :class:`Adaptation` — the pair a model adapts with when it serves. The meta-learner that trains them
  (:mod:`adapters.meta.learners`) owns them and hands them to the model it trains; a checkpoint saves them next to
  the model's weights (under ``rates.`` and ``prior.``) and gives them back to the model it loads, so that
  :meth:`AdapterModule.adapt <adapters.models.AdapterModule.adapt>` and the online learner adapt with the rates and
  Λ0 the checkpoint was trained with. They are not the model's parameters: ``model.parameters()`` and
  ``model.state_dict()`` hold none of them.

Example
-------
>>> import torch
>>> from adapters.meta.innerconfig import InnerConfig
>>> rates = InnerRates(4, InnerConfig(lr=0.5, lr_rating=0.02), rating_block=slice(2, 4), kind="per_parameter")
>>> [round(float(r), 4) for r in rates()], rates.log_lr.requires_grad
([0.5, 0.5, 0.02, 0.02], True)
>>> InnerRates(4, InnerConfig(steps=3), kind="per_step")().shape
torch.Size([3, 4])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from adapters.errors import MetarecError
from adapters.meta.innerconfig import InnerConfig

#: ``fixed``: the configured rates; ``per_parameter``: learned, one per state entry (Meta-SGD); ``per_step``: learned,
#: one row per inner step (MAML++)
RATE_KINDS = ("fixed", "per_parameter", "per_step")
#: the keys the rates and the prior had in the weights of a checkpoint written while the model carried them, and
#: the keys they have now (``rates.`` / ``prior.`` + the parameter's name)
LEGACY_KEYS = {"log_lr": "rates.log_lr", "log_lr_steps": "rates.log_lr_steps", "log_prior_prec": "prior.log_prior_prec"}


def rate_kind(inner: InnerConfig) -> str:
    """The kind of rates a model configured with ``inner`` adapts with (what its checkpoint stores)."""
    return "per_step" if inner.per_step_lr else "per_parameter" if inner.metasgd else "fixed"


class InnerRates(nn.Module):
    """The inner loop's learning rates ``α`` (see the module docstring).

    Parameters
    ----------
    state_dim : int
        Length of a user state.
    inner : InnerConfig
        ``lr``, ``lr_rating`` (on ``rating_block``) and ``steps`` (rows of per-step rates).
    rating_block : slice, optional
        The model's rating block, whose rate is ``inner.lr_rating`` when set.
    derived : slice, optional
        The model's derived entries (seq's context), whose rate is 0: no step moves them.
    kind : str
        One of :data:`RATE_KINDS`.
    """

    def __init__(self, state_dim: int, inner: InnerConfig, rating_block: slice | None = None,
                 derived: slice | None = None, kind: str = "fixed") -> None:
        super().__init__()
        if kind not in RATE_KINDS:
            raise MetarecError(f"unknown kind of inner rates {kind!r} (choose {', '.join(RATE_KINDS)})")
        self.kind = kind
        log_lr = torch.full((state_dim,), math.log(inner.lr))
        if inner.lr_rating is not None and rating_block is not None:
            log_lr[rating_block] = math.log(inner.lr_rating)
        self.log_lr = nn.Parameter(log_lr, requires_grad=kind == "per_parameter")
        if kind == "per_step":  # one learned row of rates per inner step, all starting at log_lr
            self.log_lr_steps = nn.Parameter(log_lr.repeat(max(inner.steps, 1), 1))
        else:
            self.register_parameter("log_lr_steps", None)
        self.mask: torch.Tensor | None = None
        if derived is not None:
            self.mask = torch.ones(state_dim)
            self.mask[derived] = 0.0

    def forward(self) -> torch.Tensor:
        """The rates: ``[state_dim]``, or ``[steps, state_dim]`` per step (the inner loop uses row ``k`` at step ``k``
        and the last row beyond the trained number of steps)."""
        rates = (self.log_lr_steps if self.log_lr_steps is not None else self.log_lr).exp()
        return rates if self.mask is None else rates * self.mask


def default_prior_precision(state_dim: int, inner: InnerConfig, rating_block: slice | None) -> torch.Tensor:
    """``[state_dim]`` Λ0 before meta-learning: the gradient learner's own pulls toward θ0 in the same units
    (``2·prox`` on the ranking entries, twice the ridge λ on the rating block)."""
    prec = torch.full((state_dim,), max(2.0 * float(inner.prox), 1e-2))
    if rating_block is not None:
        prec[rating_block] = 2.0 * float(inner.ridge_lambda)
    return prec


class PriorPrecision(nn.Module):
    """The Bayesian task learner's prior precision ``Λ0 = exp(log_prior_prec)`` ``[state_dim]``, meta-learned from
    :func:`default_prior_precision` (:mod:`adapters.meta.bayes`)."""

    def __init__(self, state_dim: int, inner: InnerConfig, rating_block: slice | None = None) -> None:
        super().__init__()
        self.log_prior_prec = nn.Parameter(default_prior_precision(state_dim, inner, rating_block).log())

    def forward(self) -> torch.Tensor:
        """``[state_dim]`` Λ0."""
        return self.log_prior_prec.exp()


@dataclass
class Adaptation:
    """What a model adapts with that meta-learning owns: its inner rates and, for the bayes task learner, Λ0."""

    rates: InnerRates
    prior: PriorPrecision | None = None

    @staticmethod
    def configured(state_dim: int, inner: InnerConfig, rating_block: slice | None = None,
                   derived: slice | None = None) -> Adaptation:
        """The rates ``inner`` describes at their starting values (their kind: :func:`rate_kind`), with Λ0 for the
        bayes task learner: what a model adapts with until a meta-learner or a checkpoint gives it theirs."""
        prior = PriorPrecision(state_dim, inner, rating_block) if inner.task_learner == "bayes" else None
        return Adaptation(InnerRates(state_dim, inner, rating_block, derived, rate_kind(inner)), prior)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor under its checkpoint key (``rates.log_lr``, ``rates.log_lr_steps``, ``prior.log_prior_prec``)."""
        out = {f"rates.{k}": v for k, v in self.rates.state_dict().items()}
        if self.prior is not None:
            out.update({f"prior.{k}": v for k, v in self.prior.state_dict().items()})
        return out

    def load(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy ``weights`` (checkpoint keys, as :meth:`named_tensors` gives them) in; every key must be known and
        every tensor present."""
        rates = {k[len("rates."):]: v for k, v in weights.items() if k.startswith("rates.")}
        prior = {k[len("prior."):]: v for k, v in weights.items() if k.startswith("prior.")}
        unknown = sorted(set(weights) - {f"rates.{k}" for k in rates} - {f"prior.{k}" for k in prior})
        if unknown or (prior and self.prior is None):
            raise MetarecError(f"unexpected tensors {', '.join(unknown or sorted(prior))}")
        self.rates.load_state_dict(rates, strict=True)
        if self.prior is not None:
            self.prior.load_state_dict(prior, strict=True)

    def freeze(self) -> None:
        """No gradient for any of them (serving)."""
        self.rates.requires_grad_(False)
        if self.prior is not None:
            self.prior.requires_grad_(False)


def split_weights(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checkpoint's tensors as ``(the model's, the adaptation's)``; the legacy top-level keys (``log_lr``,
    ``log_lr_steps``, ``log_prior_prec``: checkpoints written while the model carried them) go to their new owners."""
    model, adaptation = {}, {}
    for key, value in weights.items():
        key = LEGACY_KEYS.get(key, key)
        (adaptation if key.startswith(("rates.", "prior.")) else model)[key] = value
    return model, adaptation

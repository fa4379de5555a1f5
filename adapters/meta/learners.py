"""Meta-learners: the outer objective of one batch of tasks (a task = one user's support and query sets).

One class per algorithm, each an ``nn.Module`` that owns what it learns besides the model (its inner rates,
:class:`~adapters.meta.rates.InnerRates`, and with the bayes task learner the prior precision Λ0,
:class:`~adapters.meta.rates.PriorPrecision`) and hands them to the model it trains as its ``adaptation``, so that
the model adapts with them when it serves. All share the model code and the batched inner loop
(:mod:`adapters.meta.inner`); :meth:`MetaLearner.objective` returns a scalar whose gradient w.r.t. the model's and
the meta-learner's parameters is that algorithm's meta-gradient, so one optimizer drives them all:

* :class:`MAML` (``maml``)       — second order: the query loss after ``K`` differentiable inner steps;
* :class:`FOMAML` (``fomaml``)   — first order: same, with each inner gradient detached;
* :class:`MetaSGD` (``metasgd``) — second-order MAML whose per-parameter inner learning rates are learned too;
* :class:`MAMLpp` (``mamlpp``)   — MAML++ (:mod:`adapters.meta.mamlpp`): learned per-step rates, the annealed
  multi-step loss, first order early in training;
* :class:`Reptile` (``reptile``) — θ0 moves toward the states adapted on support ∪ query (surrogate ½‖θ0 − θ'‖²);
  the shared item-side parameters follow the first-order loss at the adapted states;
* :class:`ERM` (``erm``)         — no inner loop during training (plain empirical risk at θ0); the
  ``erm_finetune`` baseline.

With the Bayesian task learner (``InnerConfig.task_learner="bayes"``, :mod:`adapters.meta.bayes`) the outer loss is
the query loss at the posterior mean after one update from the prior (θ0, Λ0): ``maml`` also differentiates through
the window's ranking gradient (second order), ``mamlpp`` too after its first-order phase, ``fomaml`` never;
``reptile`` moves θ0 toward the posterior mean on support ∪ query; ``erm`` is unchanged. ``metasgd`` is refused
(:func:`~adapters.meta.config.check_learners`): it learns per-parameter inner rates, and one Newton step has none.

Example
-------
>>> import torch
>>> from adapters.models import build_model, FeatureTables
>>> from adapters.base import SupportBatch
>>> m = build_model("mf", n_items=8, tables=FeatureTables.empty(8), config={"dim": 4, "rating_dim": 2})
>>> s = SupportBatch.from_lists([[1, 2]], [[4.0, 5.0]]); q = SupportBatch.from_lists([[3]], [[2.0]])
>>> learner = build_meta_learner("metasgd", m)
>>> learner.objective(m, s, q, steps=2).backward()
>>> m.item_emb.grad is not None, learner.rates.log_lr.grad is not None, m.adaptation.rates is learner.rates
(True, True, True)
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from adapters.base import Adapter, SupportBatch
from adapters.errors import MetarecError
from adapters.meta import bayes
from adapters.meta.config import META_NAMES, check_learners
from adapters.meta.inner import inner_loop
from adapters.meta.mamlpp import first_order, mamlpp_objective
from adapters.meta.rates import Adaptation, InnerRates, PriorPrecision

ALL_META = META_NAMES + ("erm",)


def concat(a: SupportBatch, b: SupportBatch) -> SupportBatch:
    """Events of ``a`` then of ``b`` for each user (support ∪ query)."""
    return SupportBatch(torch.cat([a.items, b.items], 1), torch.cat([a.ratings, b.ratings], 1),
                        torch.cat([a.mask, b.mask], 1), torch.cat([a.rated, b.rated], 1), a.users)


class MetaLearner(nn.Module):
    """The outer algorithm of meta-training: the owner of the inner rates (kind :attr:`RATES`) and, with the bayes
    task learner, of Λ0, which it gives ``model`` to adapt with.

    Parameters
    ----------
    model : Adapter
        The model it trains; its ``inner`` configuration gives the starting rates and the task learner.
    """

    name: ClassVar[str] = ""
    #: the kind of inner rates it learns (:data:`adapters.meta.rates.RATE_KINDS`)
    RATES: ClassVar[str] = "fixed"

    def __init__(self, model: Adapter) -> None:
        super().__init__()
        check_learners(self.name, model.inner.task_learner, model.name)
        self.bayesian = model.inner.task_learner == "bayes"
        self.rates = InnerRates(model.state_dim, model.inner, model.rating_block, model.derived_block, self.RATES)
        self.prior: PriorPrecision | None = bayes.prior(model) if self.bayesian else None  # type: ignore[arg-type]
        model.adaptation = Adaptation(self.rates, self.prior)

    def objective(self, model: Adapter, support: SupportBatch, query: SupportBatch, steps: int | None = None,
                  prox: float | None = None, progress: float = 1.0) -> torch.Tensor:
        """Scalar outer loss of one batch of tasks; ``steps``/``prox`` None: the model's; ``progress`` (the fraction
        of training done) drives MAML++'s annealings and is ignored by the others."""
        if self.bayesian:
            return self.bayes_objective(model, support, query, progress)
        steps = model.inner.steps if steps is None else steps
        prox = model.inner.prox if prox is None else prox
        return self.gradient_objective(model, support, query, steps, prox, progress)

    def gradient_objective(self, model: Adapter, support: SupportBatch, query: SupportBatch, steps: int,
                           prox: float, progress: float) -> torch.Tensor:
        """The outer loss with the gradient task learner (the inner loop of :mod:`adapters.meta.inner`)."""
        raise NotImplementedError  # pragma: no cover - every registered meta-learner defines it

    def bayes_objective(self, model: Adapter, support: SupportBatch, query: SupportBatch,
                        progress: float) -> torch.Tensor:
        """The outer loss with the Bayesian task learner: the query loss at the posterior mean after one update from
        the prior; its gradient reaches θ0, Λ0 and the item tables through the update's closed form, and through
        the window's ranking gradient too when :meth:`second_order` (module docstring)."""
        s0 = bayes.init_states(model, support.users)  # type: ignore[arg-type]
        posterior = bayes.adapt(model, s0, support, second_order=self.second_order(progress))  # type: ignore[arg-type]
        return model.batch_loss(bayes.split(model, posterior)[0], query).mean()  # type: ignore[arg-type]

    def second_order(self, progress: float) -> bool:
        """Whether the bayes objective differentiates through the window's ranking gradient at ``progress``."""
        return True


class MAML(MetaLearner):
    """Second-order MAML (Finn et al. 2017) with the configured inner rates."""

    name = "maml"

    def gradient_objective(self, model: Adapter, support: SupportBatch, query: SupportBatch, steps: int,
                           prox: float, progress: float) -> torch.Tensor:
        theta0 = model.init_states(support.users)
        adapted = inner_loop(model, theta0, support, steps, self.rates(), prox, theta0, create_graph=True,
                             first_order=False, method=model.inner.grad)
        return model.batch_loss(adapted, query).mean()


class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017): second-order MAML that also learns one inner rate per state entry."""

    name = "metasgd"
    RATES = "per_parameter"


class FOMAML(MetaLearner):
    """First-order MAML: the inner gradients are detached."""

    name = "fomaml"

    def gradient_objective(self, model: Adapter, support: SupportBatch, query: SupportBatch, steps: int,
                           prox: float, progress: float) -> torch.Tensor:
        theta0 = model.init_states(support.users)
        adapted = inner_loop(model, theta0, support, steps, self.rates(), prox, theta0, first_order=True,
                             method=model.inner.grad)
        return model.batch_loss(adapted, query).mean()

    def second_order(self, progress: float) -> bool:
        return False


class MAMLpp(MetaLearner):
    """MAML++ (Antoniou et al. 2019): learned per-step rates, the multi-step loss, derivative-order annealing."""

    name = "mamlpp"
    RATES = "per_step"

    def gradient_objective(self, model: Adapter, support: SupportBatch, query: SupportBatch, steps: int,
                           prox: float, progress: float) -> torch.Tensor:
        return mamlpp_objective(model, self.rates(), support, query, steps, prox, progress)

    def second_order(self, progress: float) -> bool:
        return not first_order(progress)


class Reptile(MetaLearner):
    """Reptile (Nichol et al. 2018): θ0 moves toward the states adapted on support ∪ query."""

    name = "reptile"

    def gradient_objective(self, model: Adapter, support: SupportBatch, query: SupportBatch, steps: int,
                           prox: float, progress: float) -> torch.Tensor:
        theta0 = model.init_states(support.users)
        both = concat(support, query)
        anchor = theta0.detach()
        adapted = inner_loop(model, anchor, both, steps, self.rates().detach(), prox, anchor, first_order=True,
                             method=model.inner.grad).detach()
        pull = 0.5 * ((theta0 - adapted) ** 2).sum(1).mean()
        return model.batch_loss(adapted, both).mean() + pull

    def bayes_objective(self, model: Adapter, support: SupportBatch, query: SupportBatch,
                        progress: float) -> torch.Tensor:
        s0 = bayes.init_states(model, support.users)  # type: ignore[arg-type]
        both = concat(support, query)
        adapted = bayes.split(model, bayes.adapt(model, s0.detach(), both))[0].detach()  # type: ignore[arg-type]
        pull = 0.5 * ((s0[:, :model.state_dim] - adapted) ** 2).sum(1).mean()
        return model.batch_loss(adapted, both).mean() + pull


class ERM(MetaLearner):
    """No inner loop in training: the loss at θ0 (the ``erm_finetune`` baseline), with either task learner."""

    name = "erm"

    def objective(self, model: Adapter, support: SupportBatch, query: SupportBatch, steps: int | None = None,
                  prox: float | None = None, progress: float = 1.0) -> torch.Tensor:
        theta0 = model.init_states(support.users)
        if model.derived_block is not None:  # the window's context is an input of the model, not adaptation
            return model.batch_loss(model.prepare_states(theta0, support), query).mean()
        return model.batch_loss(theta0, concat(support, query)).mean()


#: the meta-learner of each command-line name
META_LEARNERS: dict[str, type[MetaLearner]] = {c.name: c for c in (MAML, FOMAML, Reptile, MetaSGD, MAMLpp, ERM)}


def build_meta_learner(name: str, model: Adapter) -> MetaLearner:
    """The meta-learner called ``name`` (one of :data:`ALL_META`) for ``model``, which adapts with its rates from
    now on; :class:`MetarecError` for an unknown name or a pair it cannot train."""
    cls = META_LEARNERS.get(name)
    if cls is None:
        raise MetarecError(f"unknown meta-learner {name!r} (choose {', '.join(ALL_META)})")
    return cls(model)

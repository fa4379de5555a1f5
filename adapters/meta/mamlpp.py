"""MAML++ (Antoniou et al., ICLR 2019, "How to train your MAML"): the parts that fit a per-user state.

Three of the paper's fixes, on top of second-order MAML:

* **LSLR** — learned per-step learning rates: :class:`~adapters.meta.learners.MAMLpp` owns ``log_lr_steps``
  ``[K, state_dim]`` (:class:`~adapters.meta.rates.InnerRates` of kind ``per_step``: one row of per-parameter rates
  per inner step, all starting at the configured rates; ``InnerConfig.per_step_lr``), trained with θ0 and saved in
  the checkpoint. Serving uses row ``k`` at step ``k``; asked for more steps than trained, the
  later steps use the last row, for fewer the first rows (:func:`adapters.meta.inner.inner_loop`).
* **MSL** — multi-step loss: the query loss after *every* inner step, weighted by :func:`step_weights`: uniform at
  first, annealed toward the last step over the first ``msl_fraction`` of training; the earlier steps keep a floor of
  ``0.03 / K`` each (the paper's value).
* **DA** — derivative-order annealing: first-order meta-gradients for the first ``first_order_fraction`` of training
  (cheaper, and stabler while θ0 is far off), second order afterwards.

Not carried over: per-step batch-norm statistics (the models have no batch norm) and the cosine annealing of the
outer learning rate (the other meta-learners train with a constant one; kept equal for the comparison).

``progress`` is the fraction of meta-training done, ``(epoch + step / steps_per_epoch) / epochs``; 1.0 (the default
outside training) means annealed: second order, weights at their final values.

Example
-------
>>> [round(float(w), 4) for w in step_weights(3, progress=0.0)]
[0.3333, 0.3333, 0.3333]
>>> [round(float(w), 4) for w in step_weights(3, progress=1.0)]
[0.01, 0.01, 0.98]
>>> first_order(progress=0.1), first_order(progress=0.5)
(True, False)
"""
from __future__ import annotations

from dataclasses import dataclass
import torch

from adapters.base import Adapter, SupportBatch
from adapters.meta.inner import inner_loop


@dataclass(frozen=True)
class MAMLPPSchedule:
    """When MAML++'s annealings end, as fractions of meta-training."""

    msl_fraction: float = 0.5  #: the multi-step loss weights reach their final values at this progress
    first_order_fraction: float = 0.2  #: first-order meta-gradients before this progress, second order after
    min_weight: float = 0.03  #: floor of each earlier step's weight, times 1/K


SCHEDULE = MAMLPPSchedule()


def step_weights(steps: int, progress: float, schedule: MAMLPPSchedule = SCHEDULE) -> torch.Tensor:
    """Weights ``[steps]`` (summing to 1) of the query losses after steps 1..K at ``progress``."""
    if steps <= 1:
        return torch.ones(max(steps, 1))
    t = min(max(progress, 0.0) / schedule.msl_fraction, 1.0) if schedule.msl_fraction > 0 else 1.0
    early = max((1.0 - t) / steps, schedule.min_weight / steps)
    w = torch.full((steps,), early)
    w[-1] = 1.0 - early * (steps - 1)
    return w


def first_order(progress: float, schedule: MAMLPPSchedule = SCHEDULE) -> bool:
    """Whether the meta-gradient is first order at ``progress`` (derivative-order annealing)."""
    return progress < schedule.first_order_fraction


def mamlpp_objective(model: Adapter, rates: torch.Tensor, support: SupportBatch, query: SupportBatch, steps: int,
                     prox: float, progress: float = 1.0, schedule: MAMLPPSchedule = SCHEDULE) -> torch.Tensor:
    """MAML++'s outer loss of one batch of tasks: the weighted query losses after each inner step, with the per-step
    ``rates`` ``[K, D]`` (:class:`~adapters.meta.learners.MAMLpp`'s), first or second order by ``progress``."""
    theta0 = model.init_states(support.users)
    fo = first_order(progress, schedule)
    trace: list[torch.Tensor] = []
    adapted = inner_loop(model, theta0, support, steps, rates, prox, theta0, create_graph=not fo,
                         first_order=fo, method=model.inner.grad, trace=trace)
    if not trace:  # no inner step: the query loss at θ0
        return model.batch_loss(adapted, query).mean()
    weights = step_weights(len(trace), progress, schedule)
    losses = torch.stack([model.batch_loss(s, query).mean() for s in trace])
    return (weights.to(losses.dtype) * losses).sum()

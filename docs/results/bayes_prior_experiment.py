"""ML-100K prequential (1-second micro-batches), metarec only: a gradient-trained θ0 served with --task-learner bayes
whose ranking-block prior precision is F times its default (2·prox), persistence RHO.

    metarec train --dataset ml-100k --history 0.5 --out CK        # θ0 = seq + MAML on the history
    python docs/results/bayes_prior_experiment.py CK F RHO OUT.json
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import adapters.meta.bayes as bayes  # noqa: E402
from adapters.evaluation.config import EvaluationConfig  # noqa: E402
from adapters.evaluation.prequential_run import run_prequential  # noqa: E402

ck, factor, rho, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
default = bayes.default_prior_precision


def scaled(model):
    prec = default(model)
    ranking = prec * factor
    ranking[model.rating_block] = prec[model.rating_block]
    return ranking


bayes.default_prior_precision = scaled
report = run_prequential(EvaluationConfig(dataset="ml-100k", batch_seconds=1.0, checkpoint=ck, task_learner="bayes",
                                          persistence=rho, models=("metarec",), progress=False))
Path(out).write_text(json.dumps(report, indent=1))
print(factor, rho, {k: round(v, 4) for k, v in report["models"]["metarec"].items()})

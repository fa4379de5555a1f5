"""Adaptation speed of ``seq`` under the gradient and the Bayesian task learner, alternated ``--reps`` times
(users adapted and ranked per second, no Kafka; :func:`stream.bench.adaptation.measure_adaptation`).

    python -m stream.bench.tools.ab_task_learner --dataset ml-1m --reps 3
"""
from __future__ import annotations

import argparse

import torch

from adapters.data.datasets import load_dataset
from stream.bench.adaptation import measure_adaptation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.dataset)
    for rep in range(args.reps):
        for kind in ("gradient", "bayes"):
            r = measure_adaptation(ds, "seq", max_seconds=args.seconds, task_learner=kind)
            print(f"rep {rep} {kind:8s} {r.users_per_s:9.0f} users/s  (adapt {r.adapt_seconds:.2f} s, "
                  f"rank {r.rank_seconds:.2f} s, {r.users} users)", flush=True)


if __name__ == "__main__":
    main()

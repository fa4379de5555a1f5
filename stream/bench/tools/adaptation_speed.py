"""Batched adaptation throughput: K inner steps on 32-event supports + full-catalog scoring, users/s.

Run: ``python -m stream.bench.tools.adaptation_speed [--threads 2] [--batch 256] [--items 1682] [--repeats 5]``.
Models are freshly built (untrained weights cost the same as trained ones) with synthetic feature tables and the
inner-loop configuration a trained model is served with (``stream.bench.adaptation.served_inner``: mf adapts its
rating block with the ridge solver), the gradient method as given.
"""
from __future__ import annotations

import argparse
import time

import torch

from dataclasses import replace

from adapters.base import SupportBatch
from adapters.models import FeatureTables, build_model
from stream.bench.adaptation import served_inner


def tables(n_items: int, n_users: int, gen: torch.Generator) -> FeatureTables:
    return FeatureTables(item_genres=(torch.rand(n_items, 18, generator=gen) < 0.1).float(),
                         item_year=torch.randint(0, 70, (n_items,), generator=gen),
                         user_age=torch.randint(0, 8, (n_users,), generator=gen),
                         user_gender=torch.randint(0, 3, (n_users,), generator=gen),
                         user_occupation=torch.randint(0, 22, (n_users,), generator=gen))


def measure(model: str, batch: int, n_items: int, support: int, steps: int, repeats: int,
            grad: str = "auto") -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    m = build_model(model, n_items, tables(n_items, 1000, gen), inner=replace(served_inner(model, steps), grad=grad))
    m.eval()
    m.requires_grad_(False)
    items = torch.randint(1, n_items, (batch, support), generator=gen)
    ratings = torch.randint(1, 6, (batch, support), generator=gen).float()
    ones = torch.ones(batch, support, dtype=torch.bool)
    sb = SupportBatch(items, ratings, ones, ones, torch.randint(0, 1000, (batch,), generator=gen))
    states = m.init_states(sb.users).detach().clone()

    def once() -> None:
        new = m.adapt(states, sb, steps=steps)
        m.score(new, sb.users)

    once()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"users_per_s": batch / best, "ms_per_batch": 1000 * best, "state_bytes": 4 * m.state_dim}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--items", type=int, default=1682)
    p.add_argument("--support", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"adaptation: K={args.steps}, support {args.support}, {args.items} items, "
                        f"batch {args.batch}, {args.threads} threads")
    for col in ("model", "gradient", "users/s", "ms/batch", "state bytes"):
        table.add_column(col, justify="right")
    for model, grad in (("mf", "analytic"), ("mf", "autograd"), ("melu", "autograd"), ("melu", "func")):
        r = measure(model, args.batch, args.items, args.support, args.steps, args.repeats, grad)
        table.add_row(model, grad, f"{r['users_per_s']:,.0f}", f"{r['ms_per_batch']:.1f}", str(r["state_bytes"]))
    Console().print(table)


if __name__ == "__main__":
    main()

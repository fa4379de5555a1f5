"""The machine's float32 matrix-multiply speed at the shapes adaptation uses: the ceiling for users/s.

Run: ``python -m stream.bench.tools.gemm_peak [--items 3706] [--batch 256] [--repeats 20]``.

* ``mf``: one catalog GEMM ``[B, 64] × [64, N]`` (logits / scores; ``p @ Q`` has the same FLOPs). A served mf
  adaptation with K = 3 costs 7 of them per user (3 × logits, 3 × ``p @ Q``, the final scores).
* ``melu``: full-catalog scoring through a per-user MLP, ``[N, 96] × [96, 64]`` then ``[N, 64] × [64, 64]`` for each
  user (batched matmul over 64 users), the two layers that dominate its cost.

Prints GFLOP/s and the users/s that the GEMMs alone would allow (no softmax, no top-k, no solve).
"""
from __future__ import annotations

import argparse
import time

import torch


def best_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=3706, help="catalog size (default 3706, ML-1M)")
    p.add_argument("--batch", type=int, default=256, help="users per mf batch (default 256)")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    n, b = args.items, args.batch
    gen = torch.Generator().manual_seed(0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        u, q = torch.randn(b, 64, generator=gen), torch.randn(n, 64, generator=gen)
        out = torch.empty(b, n)
        s = best_seconds(lambda: torch.mm(u, q.t(), out=out), args.repeats)
        flops = 2 * b * n * 64
        mf_users = b / (7 * s)
        chunk = 64
        e = torch.randn(n, 96, generator=gen)
        w1, w2 = torch.randn(chunk, 96, 64, generator=gen), torch.randn(chunk, 64, 64, generator=gen)
        s2 = best_seconds(lambda: torch.bmm(torch.matmul(e, w1).relu_(), w2), max(3, args.repeats // 4))
        flops2 = 2 * chunk * n * (96 * 64 + 64 * 64)
        print(f"{threads} thread(s): mf catalog GEMM {flops / s / 1e9:6.1f} GFLOP/s -> at most {mf_users:,.0f} users/s "
              f"(7 GEMMs/user); melu scoring layers {flops2 / s2 / 1e9:6.1f} GFLOP/s -> at most "
              f"{chunk / s2:,.0f} users/s (scoring alone)")


if __name__ == "__main__":
    main()

"""``metarec synth``: write a synthetic interaction stream with planted per-user interest drift."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Generate a synthetic interaction stream whose users change their interests at known moments,
to measure how fast a recommender adapts.

Items belong to latent topics; each user likes a few topics, and most users switch to other
topics part-way through their history: abruptly, or gradually over --gradual-span events.
The stream is written in the dataset CSV form (user_id,item_id,rating,timestamp, sorted by time,
users interleaved), with the ground truth next to it in FILE.drift.json: per user the kind of
drift, the index of the drift event in the user's own sequence, its timestamp, and the topics
before and after. Use it anywhere a dataset is accepted (--dataset FILE.csv).

Example:
  metarec synth --out data/drift.csv --users 2000 --items 500 --events-per-user 60 --drift both --seed 7
  metarec evaluate --dataset data/drift.csv --protocol prequential --json reports/drift.json
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``metarec synth``."""
    from adapters.synth import DRIFT_KINDS, SynthConfig

    d = SynthConfig()
    parser.add_argument("--out", required=True, metavar="FILE.csv",
                        help="where to write the stream (the ground truth goes to FILE.drift.json)")
    parser.add_argument("--users", type=_positive_int, default=d.n_users, help=f"number of users (default {d.n_users})")
    parser.add_argument("--items", type=_positive_int, default=d.n_items, help=f"number of items (default {d.n_items})")
    parser.add_argument("--events-per-user", type=_positive_int, default=d.events_per_user,
                        help=f"events per user (default {d.events_per_user}; at most half of --items)")
    parser.add_argument("--clusters", type=_positive_int, default=d.n_clusters,
                        help=f"latent item topics (default {d.n_clusters})")
    parser.add_argument("--drift", choices=DRIFT_KINDS, default=d.drift,
                        help=f"kind of interest drift (default {d.drift}: half abrupt, half gradual)")
    parser.add_argument("--gradual-span", type=_positive_int, default=d.gradual_span,
                        help=f"events over which a gradual drift completes (default {d.gradual_span})")
    parser.add_argument("--stable-fraction", type=_fraction, default=d.stable_fraction,
                        help=f"share of users who never drift, a control group (default {d.stable_fraction})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")


def run(args: argparse.Namespace) -> int:
    """Generate, write the CSV and its ground-truth sidecar, print a summary."""
    import time
    from collections import Counter
    from pathlib import Path

    from rich.console import Console

    from adapters.errors import MetarecError
    from adapters.synth import SynthConfig, generate

    out = Path(args.out)
    if out.is_dir():
        raise MetarecError(f"--out {out} is a directory; give a file name such as {out / 'stream.csv'}")
    if not out.parent.exists():
        raise MetarecError(f"--out {out}: directory {out.parent} does not exist")
    config = SynthConfig(n_users=args.users, n_items=args.items, events_per_user=args.events_per_user,
                         n_clusters=args.clusters, drift=args.drift, gradual_span=args.gradual_span,
                         stable_fraction=args.stable_fraction, seed=args.seed)
    config.validate()
    t0 = time.perf_counter()
    stream = generate(config)
    sidecar = stream.write(out)
    seconds = time.perf_counter() - t0
    kinds = Counter(u["kind"] for u in stream.truth["users"].values())
    console = Console(stderr=True)
    console.print(f"wrote [bold]{len(stream.user_ids):,}[/] events ({config.n_users:,} users, {config.n_items:,} items, "
                  f"{config.n_clusters} topics) to {out} in {seconds:.2f} s")
    console.print(f"drift: {kinds.get('abrupt', 0):,} abrupt, {kinds.get('gradual', 0):,} gradual, "
                  f"{kinds.get('none', 0):,} stable users; ground truth in {sidecar}")
    return 0

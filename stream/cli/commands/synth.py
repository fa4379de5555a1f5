"""``metarec synth``: write a synthetic interaction stream with planted per-user interest drift, or item churn."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.data.synth_churn import ChurnConfig

DESCRIPTION = """\
Generate a synthetic interaction stream whose users change their interests at known moments,
to measure how fast a recommender adapts.

Items belong to latent topics; each user likes a few topics, and most users switch to other
topics part-way through their history: abruptly, or gradually over --gradual-span events.
The stream is written in the dataset CSV form (user_id,item_id,rating,timestamp, sorted by time,
users interleaved), with the ground truth next to it in FILE.drift.json: per user the kind of
drift, the index of the drift event in the user's own sequence, its timestamp, and the topics
before and after. Use it anywhere a dataset is accepted (--dataset FILE.csv).

With --item-churn, the stream has item churn instead of interest drift: new items are released
continuously over the stream's 180 days (--items in all: a fifth form the starting catalog, the
rest is released during the stream), each with a popularity life cycle (attention rises over the
weeks after the release, then decays with an item-specific half-life, times an item-specific
appeal). Users come in sessions, meet items of one topic after another within a session, and a
share of them (--follower-share) follow the new releases: most of their events pick among the
items released in the last 14 days. FILE.drift.json then holds (kind "item_churn") each item's
release time, topic, appeal and half-life, the followers, and the new-item share: the share of
the second half's events (and positive events, rating >= 4) whose item was released after the
midpoint. --item-churn and --drift are mutually exclusive; --gradual-span and --stable-fraction
apply to the drift stream only. `metarec evaluate --protocol prequential` leaves out its
drift-recovery section for an item-churn stream.

Examples:
  metarec synth --out data/drift.csv --users 2000 --items 500 --events-per-user 60 --drift both --seed 7
  metarec evaluate --dataset data/drift.csv --protocol prequential --json reports/drift.json
  metarec synth --out data/churn.csv --item-churn --seed 7
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
    from adapters.data.synth import DRIFT_KINDS, SynthConfig
    from adapters.data.synth_churn import ChurnConfig

    d, c = SynthConfig(), ChurnConfig()
    parser.add_argument("--out", required=True, metavar="FILE.csv",
                        help="where to write the stream (the ground truth goes to FILE.drift.json)")
    parser.add_argument("--users", type=_positive_int, default=None, help=f"number of users (default {d.n_users})")
    parser.add_argument("--items", type=_positive_int, default=None,
                        help=f"number of items (default {d.n_items}; with --item-churn {c.n_items}, of which a fifth "
                             "is the starting catalog)")
    parser.add_argument("--events-per-user", type=_positive_int, default=None,
                        help=f"events per user (default {d.events_per_user}; at most half of --items); with "
                             f"--item-churn the mean (default {c.events_per_user:g}; at most a quarter of --items)")
    parser.add_argument("--clusters", type=_positive_int, default=None,
                        help=f"latent item topics (default {d.n_clusters})")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--drift", choices=DRIFT_KINDS, default=None,
                      help=f"kind of interest drift (default {d.drift}: half abrupt, half gradual)")
    kind.add_argument("--item-churn", action="store_true",
                      help="a stream with item churn instead of interest drift: items released continuously, each "
                           "with a popularity life cycle, and users who follow the new releases")
    parser.add_argument("--gradual-span", type=_positive_int, default=d.gradual_span,
                        help=f"events over which a gradual drift completes (default {d.gradual_span})")
    parser.add_argument("--stable-fraction", type=_fraction, default=d.stable_fraction,
                        help=f"share of users who never drift, a control group (default {d.stable_fraction})")
    parser.add_argument("--follower-share", type=_fraction, default=c.follower_share,
                        help=f"with --item-churn: share of users who follow the new releases (default "
                             f"{c.follower_share})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")


def _or(value: int | None, default: int) -> int:
    """``value``, or ``default`` when the flag was not given."""
    return default if value is None else value


def _churn_config(args: argparse.Namespace) -> ChurnConfig:
    """The :class:`~adapters.data.synth_churn.ChurnConfig` of the ``--item-churn`` flags."""
    from adapters.errors import MetarecError
    from adapters.data.synth_churn import ChurnConfig

    c = ChurnConfig()
    topics = _or(args.clusters, c.n_topics)
    initial, new = c.n_initial_items, c.n_new_items
    if args.items is not None:
        if args.items < 2 * topics:
            raise MetarecError(f"--items ({args.items}) must be at least {2 * topics} with --item-churn "
                               "(2 per topic in the starting catalog)")
        initial = max(2 * topics, round(args.items / 5))
        new = args.items - initial
    config = ChurnConfig(n_users=_or(args.users, c.n_users), n_initial_items=initial, n_new_items=new,
                         n_topics=topics, events_per_user=float(_or(args.events_per_user, c.events_per_user)),
                         follower_share=args.follower_share, seed=args.seed)
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    """Generate, write the CSV and its ground-truth sidecar, print a summary."""
    import time
    from collections import Counter
    from pathlib import Path

    from rich.console import Console

    from adapters.errors import MetarecError
    from adapters.data.synth import SynthConfig, generate
    from adapters.data.synth_churn import generate_churn

    out = Path(args.out)
    if out.is_dir():
        raise MetarecError(f"--out {out} is a directory; give a file name such as {out / 'stream.csv'}")
    if not out.parent.exists():
        raise MetarecError(f"--out {out}: directory {out.parent} does not exist")
    churn = bool(getattr(args, "item_churn", False))
    if churn and args.drift is not None:
        raise MetarecError("--item-churn and --drift (or METAREC_DRIFT) are mutually exclusive")
    console = Console(stderr=True)
    if churn:
        t0 = time.perf_counter()
        stream = generate_churn(_churn_config(args))
        sidecar = stream.write(out)
        s = stream.truth["summary"]
        console.print(f"wrote [bold]{s['events']:,}[/] events ({s['users']:,} users, {s['items']:,} items, "
                      f"{s['items_released_during_stream']:,} released during the stream) to {out} in "
                      f"{time.perf_counter() - t0:.2f} s; new-item share {_pct(s['new_item_share_second_half'])} "
                      f"of the second half's events, {_pct(s['new_item_share_second_half_positives'])} of its "
                      f"positives; ground truth in {sidecar}", soft_wrap=True)
        return 0
    d = SynthConfig()
    config = SynthConfig(n_users=_or(args.users, d.n_users), n_items=_or(args.items, d.n_items),
                         events_per_user=_or(args.events_per_user, d.events_per_user),
                         n_clusters=_or(args.clusters, d.n_clusters), drift=args.drift or d.drift,
                         gradual_span=args.gradual_span, stable_fraction=args.stable_fraction, seed=args.seed)
    config.validate()
    t0 = time.perf_counter()
    stream = generate(config)
    sidecar = stream.write(out)
    seconds = time.perf_counter() - t0
    kinds = Counter(u["kind"] for u in stream.truth["users"].values())
    console.print(f"wrote [bold]{len(stream.user_ids):,}[/] events ({config.n_users:,} users, {config.n_items:,} items, "
                  f"{config.n_clusters} topics) to {out} in {seconds:.2f} s")
    console.print(f"drift: {kinds.get('abrupt', 0):,} abrupt, {kinds.get('gradual', 0):,} gradual, "
                  f"{kinds.get('none', 0):,} stable users; ground truth in {sidecar}")
    return 0


def _pct(share: float | None) -> str:
    """``0.3104`` → ``"31.0 %"``."""
    return "n/a" if share is None else f"{100 * share:.1f} %"

"""A seedable synthetic interaction stream with planted, per-user interest drift (known ground truth).

Model
-----
* Items belong to ``n_clusters`` latent topics (balanced sizes); within a topic, popularity is Zipf-like.
* Each user likes ``interests`` topics. A drifting user switches, at a known event index of their own sequence,
  to ``interests`` *different* topics: abruptly (from that event on) or gradually (the chance of drawing from the
  new topics rises linearly over ``gradual_span`` events). A share ``stable_fraction`` of users never drift
  (a control group).
* Each event draws a topic from the user's current interests with probability ``focus``, else a random topic,
  then an item of that topic by popularity; a user never sees the same item twice.
* Ratings 1–5: high for items of the topics the user currently likes, low otherwise.
* Every user is active over their own time window; the users' events interleave in time; each user's
  timestamps strictly increase.

Examples
--------
>>> stream = generate(SynthConfig(n_users=50, n_items=100, events_per_user=20, seed=1))
>>> len(stream.user_ids) == 50 * 20, bool((stream.timestamps[1:] >= stream.timestamps[:-1]).all())
(True, True)
>>> sorted({d["kind"] for d in stream.truth["users"].values()}) <= ["abrupt", "gradual", "none"]
True
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adapters.errors import MetarecError

log = logging.getLogger(__name__)

DRIFT_KINDS = ("abrupt", "gradual", "both")


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the generator (defaults: a stream where per-user adaptation visibly matters)."""

    n_users: int = 2000
    n_items: int = 500
    events_per_user: int = 60
    n_clusters: int = 10
    interests: int = 2               # topics a user likes at a time
    drift: str = "both"              # abrupt | gradual | both (half of the drifting users each)
    stable_fraction: float = 0.2     # users who never drift (control group)
    drift_at: tuple[float, float] = (0.5, 0.8)   # drift event index, as a share of the user's events
    gradual_span: int = 20           # events over which a gradual drift completes
    focus: float = 0.9               # chance an event comes from the user's current interests
    zipf: float = 0.8                # popularity exponent within a topic
    days: float = 120.0              # length of the whole stream
    start: float = 1_600_000_000.0   # epoch seconds of the first possible event
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`MetarecError` (one line) on an impossible configuration."""
        per_topic = self.n_items // max(self.n_clusters, 1)
        checks = [
            (self.n_users >= 1, "--users must be at least 1"),
            (self.n_clusters >= 2, "need at least 2 clusters"),
            (self.interests >= 1 and 2 * self.interests <= self.n_clusters,
             f"interests ({self.interests}) must be ≥ 1 and leave as many other clusters to drift to "
             f"(clusters: {self.n_clusters})"),
            (self.events_per_user >= 4, "--events-per-user must be at least 4"),
            (per_topic >= 2, f"--items must be at least 2 per cluster ({2 * self.n_clusters})"),
            (self.events_per_user <= self.n_items // 2,
             f"--events-per-user ({self.events_per_user}) must be at most half of --items ({self.n_items}): "
             "users never repeat an item"),
            (self.drift in DRIFT_KINDS, f"--drift must be one of {', '.join(DRIFT_KINDS)}"),
            (0.0 <= self.stable_fraction <= 1.0, "stable fraction must be within [0, 1]"),
            (0.0 < self.drift_at[0] <= self.drift_at[1] < 1.0, "drift_at must satisfy 0 < low ≤ high < 1"),
            (self.gradual_span >= 1, "gradual span must be at least 1 event"),
            (0.0 <= self.focus <= 1.0, "focus must be within [0, 1]"),
            (self.zipf >= 0.0, "zipf exponent must be ≥ 0"),
            (self.days > 0, "days must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise MetarecError(message)


@dataclass
class SynthStream:
    """The generated events (sorted by timestamp, stable) and the ground truth of the planted drift."""

    user_ids: np.ndarray       # object (str) [E]
    item_ids: np.ndarray       # object (str) [E]
    ratings: np.ndarray        # float32 [E], 1..5
    timestamps: np.ndarray     # float64 [E]
    truth: dict                # JSON-able: config, item clusters, per-user drift

    def write(self, path: str | Path) -> Path:
        """Write the contract CSV to ``path`` and the ground truth next to it; return the sidecar's path."""
        from adapters.data.datasets import Dataset

        path = Path(path)
        Dataset(name=path.name, fingerprint="", user_ids=self.user_ids, item_ids=self.item_ids,
                ratings=self.ratings, timestamps=self.timestamps).to_csv(path)
        sidecar = drift_path(path)
        try:
            sidecar.write_text(json.dumps(self.truth, indent=1))
        except OSError as exc:
            raise MetarecError(f"cannot write {sidecar}: {exc.strerror or exc}") from None
        return sidecar


def drift_path(csv_path: str | Path) -> Path:
    """``stream.csv`` → ``stream.drift.json`` (the ground-truth sidecar)."""
    p = Path(csv_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".drift.json")


def _pick_distinct(rng: np.random.Generator, n_rows: int, n_cols: int, k: int,
                   forbidden: np.ndarray | None = None) -> np.ndarray:
    """k distinct columns per row, uniformly, avoiding ``forbidden`` (bool [n_rows, n_cols])."""
    keys = rng.random((n_rows, n_cols))
    if forbidden is not None:
        keys[forbidden] = 2.0
    return np.argsort(keys, axis=1)[:, :k]


def generate(config: SynthConfig | None = None) -> SynthStream:
    """Generate a stream; deterministic for a given ``config`` (including ``seed``)."""
    cfg = config or SynthConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    U, I, K = cfg.n_users, cfg.n_items, cfg.events_per_user
    topics = _item_topics(rng, cfg)
    drift = _user_drift(rng, cfg)
    # events, user-major: seq position t of user u
    user = np.repeat(np.arange(U), K)
    seq = np.tile(np.arange(K), U)
    chosen, topic = _event_topics(rng, cfg, drift, user, seq)
    item = topics.draw(rng, topic)
    _redraw_repeats(rng, cfg, topics, user, topic, item)
    # ratings: liked topics score high
    liked = (topics.item_cluster[item][:, None] == chosen).any(axis=1)
    mean = np.where(liked, 4.3, 2.2)
    ratings = np.clip(np.rint(mean + rng.normal(0.0, 0.8, U * K)), 1, 5).astype(np.float32)
    ts = _timestamps(rng, cfg)
    perm = np.lexsort((seq, user, ts))                       # by time; ties by user then sequence
    users_str = np.array([f"u{n + 1}" for n in range(U)], dtype=object)
    items_str = np.array([f"i{n + 1}" for n in range(I)], dtype=object)
    truth = _truth(cfg, drift, topics.item_cluster, ts, users_str, items_str)
    log.info("synth: %d events, %d users (%d drifting), %d items", U * K, U, int(drift.drifting.sum()), I)
    return SynthStream(user_ids=users_str[user[perm]], item_ids=items_str[item[perm]], ratings=ratings[perm],
                       timestamps=ts[perm], truth=truth)


@dataclass
class _Topics:
    """Items' topics and within-topic popularity: a global CDF offset by topic (topic c spans (c, c+1])."""

    item_cluster: np.ndarray  #: topic of each item [I]
    order: np.ndarray  #: items grouped by topic, random rank within [I]
    global_cdf: np.ndarray  #: increasing [I]

    def draw(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        """One item per entry of ``topics``, by popularity within its topic."""
        pos = np.searchsorted(self.global_cdf, topics + 1.0 - rng.random(topics.shape[0]), side="left")  # (c, c+1]
        return self.order[np.minimum(pos, len(self.order) - 1)]


@dataclass
class _Drift:
    """Each user's interests before/after, whether and how they drift, and where (own event index)."""

    old: np.ndarray  #: [U, interests]
    new: np.ndarray  #: [U, interests]
    drifting: np.ndarray  #: bool [U]
    gradual: np.ndarray  #: bool [U]
    drift_idx: np.ndarray  #: [U]


def _item_topics(rng: np.random.Generator, cfg: SynthConfig) -> _Topics:
    I, C = cfg.n_items, cfg.n_clusters
    item_cluster = rng.permutation(np.arange(I) % C)
    order = np.lexsort((rng.random(I), item_cluster))            # items grouped by topic, random rank within
    sizes = np.bincount(item_cluster, minlength=C)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(I) - np.repeat(starts, sizes)
    weight = 1.0 / (rank + 1.0) ** cfg.zipf
    csum = np.cumsum(weight)
    before = np.repeat(csum[starts] - weight[starts], sizes)
    totals = np.repeat(np.add.reduceat(weight, starts), sizes)
    global_cdf = item_cluster[order] + (csum - before) / totals   # increasing; topic c spans (c, c+1]
    global_cdf[np.cumsum(sizes) - 1] = np.arange(C) + 1.0         # exact upper ends
    return _Topics(item_cluster=item_cluster, order=order, global_cdf=global_cdf)


def _user_drift(rng: np.random.Generator, cfg: SynthConfig) -> _Drift:
    U, C, k, K = cfg.n_users, cfg.n_clusters, cfg.interests, cfg.events_per_user
    old = _pick_distinct(rng, U, C, k)
    mask = np.zeros((U, C), dtype=bool)
    np.put_along_axis(mask, old, True, axis=1)
    new = _pick_distinct(rng, U, C, k, forbidden=mask)
    drifting = rng.random(U) >= cfg.stable_fraction
    if cfg.drift == "both":
        gradual = rng.random(U) < 0.5
    else:
        gradual = np.full(U, cfg.drift == "gradual")
    lo, hi = (int(round(f * K)) for f in cfg.drift_at)
    drift_idx = rng.integers(max(lo, 1), max(hi, lo + 1, 2), size=U, endpoint=False)
    return _Drift(old=old, new=new, drifting=drifting, gradual=gradual, drift_idx=drift_idx)


def _event_topics(rng: np.random.Generator, cfg: SynthConfig, drift: _Drift, user: np.ndarray,
                  seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each event's current interests ``[E, k]`` (old or new, by the drift) and drawn topic ``[E]``."""
    E, C, k = len(user), cfg.n_clusters, cfg.interests
    d = drift.drift_idx[user]
    p_new = np.where(drift.gradual[user], np.clip((seq - d + 1) / cfg.gradual_span, 0.0, 1.0),
                     (seq >= d).astype(float))
    p_new = np.where(drift.drifting[user], p_new, 0.0)
    use_new = rng.random(E) < p_new
    chosen = np.where(use_new[:, None], drift.new[user], drift.old[user])           # [E, k] current interests
    focused = rng.random(E) < cfg.focus
    topic = np.where(focused, chosen[np.arange(E), rng.integers(0, k, E)], rng.integers(0, C, E))
    return chosen, topic


def _repeats(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """bool [E]: the event repeats an earlier item of its user (user-major order = time order per user)."""
    key = user.astype(np.int64) * n_items + item
    _, first = np.unique(key, return_index=True)
    dup = np.ones(len(item), dtype=bool)
    dup[first] = False
    return dup


def _redraw_repeats(rng: np.random.Generator, cfg: SynthConfig, topics: _Topics, user: np.ndarray,
                    topic: np.ndarray, item: np.ndarray) -> None:
    """No repeated item per user (``item`` in place): redraw repeats from the same topic, then fall back to
    any unseen item."""
    I, K = cfg.n_items, cfg.events_per_user
    for _ in range(30):
        dup = _repeats(user, item, I)
        if not dup.any():
            return
        item[dup] = topics.draw(rng, topic[dup])
    for e in np.flatnonzero(_repeats(user, item, I)):
        u = user[e]
        seen = set(np.delete(item[u * K: (u + 1) * K], e - u * K).tolist())
        pool = [j for j in np.flatnonzero(topics.item_cluster == topic[e]) if j not in seen]
        pool = pool or [j for j in range(I) if j not in seen]
        item[e] = pool[int(rng.integers(len(pool)))]


def _timestamps(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """``[U * K]`` user-major: each user active over their own window; strictly increasing per user; users
    interleave."""
    U, K = cfg.n_users, cfg.events_per_user
    T = cfg.days * 86_400.0
    begin = rng.uniform(0.0, 0.45 * T, U)
    length = rng.uniform(0.4 * T, 0.55 * T, U)
    t = np.sort(rng.uniform(0.0, 1.0, (U, K)), axis=1) * length[:, None] + begin[:, None]
    t = np.floor(t).astype(np.int64)
    t = np.maximum.accumulate(t - np.arange(K), axis=1) + np.arange(K)  # strictly increasing per user
    return (cfg.start + t.reshape(-1)).astype(np.float64)


def _truth(cfg: SynthConfig, drift: _Drift, item_cluster: np.ndarray, ts: np.ndarray, users_str: np.ndarray,
           items_str: np.ndarray) -> dict:
    """The JSON-able ground truth: config, item clusters, per-user drift."""
    K = cfg.events_per_user
    truth_users = {}
    for u in range(cfg.n_users):
        kind = "none" if not drift.drifting[u] else ("gradual" if drift.gradual[u] else "abrupt")
        entry = {"kind": kind, "events": K, "old_clusters": sorted(drift.old[u].tolist())}
        if drift.drifting[u]:
            di = int(drift.drift_idx[u])
            entry.update({"drift_index": di, "drift_timestamp": float(ts[u * K + di]),
                          "new_clusters": sorted(drift.new[u].tolist())})
            if drift.gradual[u]:
                entry["span"] = cfg.gradual_span
        truth_users[str(users_str[u])] = entry
    return {
        "description": "Ground truth of metarec synth. drift_index: 0-based index in the user's own event sequence "
                       "of the first event drawn under the new interests (abrupt), or where the share of new-interest "
                       "draws starts rising linearly to 1 over `span` events (gradual).",
        "config": {**asdict(cfg), "drift_at": list(cfg.drift_at)},
        "item_clusters": {str(items_str[j]): int(item_cluster[j]) for j in range(cfg.n_items)},
        "users": truth_users,
    }

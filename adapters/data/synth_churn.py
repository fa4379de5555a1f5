"""A seedable synthetic stream with item churn: new items keep being released, each with a popularity life cycle.

Model
-----
* Catalog: ``n_initial_items`` items released over the ``catalog_days`` before the stream starts, then
  ``n_new_items`` released during it (a Poisson process: uniform release times). Every item has a topic (one of
  ``n_topics``, balanced), an *appeal* (log-normal) and a *half-life* (log-normal around ``half_life_days``).
* Attention of an item at age ``a`` (none before its release):
  ``appeal · (1 − exp(−a / rise_days)) · (evergreen + (1 − evergreen) · 2^(−a / half_life))``: it rises over the
  weeks after the release (word of mouth), then fades towards an evergreen level. Attention is evaluated per time
  bin of ``bin_hours``; an item can be picked from the first bin that starts after its release.
* Users: topic preferences (Dirichlet of concentration ``topic_concentration``, mixed with ``explore`` of uniform),
  an activity level (log-normal) and an active window within the stream; they come in sessions (a few events
  seconds to minutes apart, sessions at least an hour apart, usually days).
* Within a session the next event keeps the previous event's topic with probability ``stickiness``, else draws a
  topic from the user's preferences: consecutive items are related.
* A share ``follower_share`` of users are *followers*: each of their events, with probability ``follow``, picks
  among the items of its topic released within the last ``recent_days`` (by appeal); every other event picks an
  item of its topic by current attention. A user never meets the same item twice.
* Ratings 1–5: ``1.5 + 2.5 · affinity + 0.5 · z(appeal) + user bias + noise``, where affinity is the user's
  preference for the item's topic relative to their favourite topic.

Ground truth (``FILE.drift.json``, ``"kind": "item_churn"``): the config, per item its release time, topic, appeal
and half-life, the followers, and summary figures, among them the *new-item share*: the share of the second half's
events -- and of its positive events, rating ≥ 4 -- whose item was released after the stream's midpoint.

Examples
--------
>>> cfg = ChurnConfig(n_users=60, n_initial_items=40, n_new_items=160, events_per_user=12.0, seed=1)
>>> stream = generate_churn(cfg)
>>> stream.truth["kind"], len(stream.truth["items"]), bool((stream.timestamps[1:] >= stream.timestamps[:-1]).all())
('item_churn', 200, True)
>>> len(set(zip(stream.user_ids.tolist(), stream.item_ids.tolist()))) == len(stream.user_ids)
True
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from adapters.errors import MetarecError
from adapters.data.synth import SynthStream

log = logging.getLogger(__name__)

DAY = 86_400.0
SESSION_GAP = 3_600          # seconds, at least, between the end of a session and the start of the next
MAX_SESSION_EVENTS = 20


@dataclass(frozen=True)
class ChurnConfig:
    """Parameters of the item-churn generator (defaults: about 72k events, a prequential run of a few minutes)."""

    n_users: int = 2000
    n_initial_items: int = 300       # the catalog at the start of the stream
    n_new_items: int = 1200          # released during the stream
    n_topics: int = 10
    days: float = 180.0              # length of the stream
    start: float = 1_600_000_000.0   # epoch seconds of the stream's start
    catalog_days: float = 365.0      # the starting catalog was released over this many days before the start
    follower_share: float = 0.35     # users who follow the new releases
    follow: float = 0.8              # chance a follower's event picks among the recent releases
    recent_days: float = 14.0        # "recently released": at most this old
    events_per_user: float = 36.0    # mean over users (log-normal activity)
    session_events: float = 3.5      # mean events per session
    activity_sigma: float = 0.6      # spread of the users' activity (log-normal sigma)
    stickiness: float = 0.8          # chance the next event of a session keeps the topic of the previous one
    topic_concentration: float = 0.3 # Dirichlet concentration of the users' topic preferences
    explore: float = 0.05            # uniform share mixed into every user's topic preferences
    half_life_days: float = 60.0     # median half-life of an item's attention
    half_life_sigma: float = 0.6
    rise_days: float = 45.0          # attention rises with this time constant after the release (word of mouth)
    appeal_sigma: float = 0.8        # log-normal sigma of the items' appeal
    evergreen: float = 0.5           # share of an item's attention that never fades
    bin_hours: float = 6.0           # attention is evaluated per bin of this many hours
    new_share_range: tuple[float, float] = (0.25, 0.40)   # expected new-item share of second-half positives
    seed: int = 0

    @property
    def n_items(self) -> int:
        """Size of the whole catalog."""
        return self.n_initial_items + self.n_new_items

    @property
    def max_events_per_user(self) -> int:
        """Cap of one user's events (a user never repeats an item)."""
        return max(1, self.n_items // 4)

    def validate(self) -> None:
        """Raise :class:`MetarecError` (one line) on an impossible configuration."""
        checks = [
            (self.n_users >= 1, "--users must be at least 1"),
            (self.n_topics >= 2, "need at least 2 topics (--clusters)"),
            (self.n_initial_items >= 2 * self.n_topics,
             f"the starting catalog needs at least 2 items per topic ({2 * self.n_topics})"),
            (self.n_new_items >= 0, "the number of new items must be ≥ 0"),
            (self.days > 0 and self.catalog_days > 0, "days must be positive"),
            (0.0 <= self.follower_share <= 1.0 and 0.0 <= self.follow <= 1.0,
             "follower share and follow probability must be within [0, 1]"),
            (0.0 <= self.stickiness <= 1.0 and 0.0 <= self.explore <= 1.0,
             "stickiness and explore must be within [0, 1]"),
            (self.recent_days > 0, "recent_days must be positive"),
            (1.0 <= self.events_per_user <= self.max_events_per_user,
             f"--events-per-user ({self.events_per_user:g}) must be at least 1 and at most a quarter of the "
             f"catalog ({self.max_events_per_user}): users never repeat an item"),
            (self.session_events >= 1.0, "session_events must be at least 1"),
            (min(self.activity_sigma, self.half_life_sigma, self.appeal_sigma) >= 0, "sigmas must be ≥ 0"),
            (self.topic_concentration > 0, "topic_concentration must be positive"),
            (self.half_life_days > 0 and self.rise_days > 0, "half_life_days and rise_days must be positive"),
            (self.evergreen > 0, "evergreen must be positive (every topic keeps an item to pick)"),
            (0 < self.bin_hours <= 24, "bin_hours must be within (0, 24]"),
            (0.0 <= self.new_share_range[0] <= self.new_share_range[1] <= 1.0, "new_share_range must be ordered"),
        ]
        for ok, message in checks:
            if not ok:
                raise MetarecError(message)


@dataclass
class _Items:
    topic: np.ndarray       # int64 [I]
    release: np.ndarray     # int64 [I], seconds from the stream's start (negative: the starting catalog)
    appeal: np.ndarray      # float64 [I]
    half_life: np.ndarray   # float64 [I], seconds


def _items(cfg: ChurnConfig, rng: np.random.Generator) -> _Items:
    n0, n1, C = cfg.n_initial_items, cfg.n_new_items, cfg.n_topics
    topic = np.concatenate([rng.permutation(np.arange(n0) % C), rng.permutation(np.arange(n1) % C)])
    before = np.sort(-np.floor(rng.uniform(0.0, cfg.catalog_days * DAY, n0)))
    during = np.sort(np.floor(rng.uniform(0.0, cfg.days * DAY, n1)))
    appeal = np.exp(rng.normal(0.0, cfg.appeal_sigma, n0 + n1))
    half_life = cfg.half_life_days * DAY * np.exp(rng.normal(0.0, cfg.half_life_sigma, n0 + n1))
    return _Items(topic.astype(np.int64), np.concatenate([before, during]).astype(np.int64), appeal, half_life)


def _segment_cdf(weight: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a global CDF over items grouped by topic: topic ``c`` spans ``(c, c + 1]``; and ``[B, C]`` non-empty."""
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    cs = np.cumsum(weight, axis=1)
    before = np.where(starts > 0, cs[:, np.maximum(starts - 1, 0)], 0.0)
    totals = cs[:, starts + sizes - 1] - before
    within = cs - np.repeat(before, sizes, axis=1)
    tot = np.repeat(totals, sizes, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(tot > 0, within / tot, 1.0)
    frac = np.where(within >= tot * (1 - 1e-9), 1.0, np.minimum(frac, 1.0))
    return np.repeat(np.arange(len(sizes)), sizes)[None, :] + frac, totals > 0


class _Sampler:
    """Draws items of a topic at a time bin, by attention (mode 0) or among recent releases (mode 1)."""

    def __init__(self, cfg: ChurnConfig, items: _Items) -> None:
        self.bin_s = int(cfg.bin_hours * 3600)
        self.n_bins = int(np.ceil(cfg.days * DAY / self.bin_s))
        self.item_topic = items.topic
        self.order = np.argsort(items.topic, kind="stable")
        sizes = np.bincount(items.topic, minlength=cfg.n_topics)
        bin_start = np.arange(self.n_bins)[:, None] * float(self.bin_s)
        release = items.release[self.order][None, :]
        age = np.maximum(bin_start + self.bin_s / 2 - release, 0.0)
        appeal, released = items.appeal[self.order], release <= bin_start
        cycle = (1.0 - np.exp(-age / (cfg.rise_days * DAY))) * (
            cfg.evergreen + (1.0 - cfg.evergreen) * np.exp2(-age / items.half_life[self.order]))
        weight = np.where(released, appeal * cycle, 0.0)
        self.weight = np.empty_like(weight)          # [B, I] in item order, for the last-resort draws
        self.weight[:, self.order] = weight
        recent = np.where(released & (age <= cfg.recent_days * DAY), appeal, 0.0)   # followers: by appeal
        (pop_cdf, _), (rec_cdf, self.recent_ok) = _segment_cdf(weight, sizes), _segment_cdf(recent, sizes)
        self.cdf = (pop_cdf, rec_cdf)

    def draw(self, rng: np.random.Generator, topic: np.ndarray, bins: np.ndarray, mode: np.ndarray) -> np.ndarray:
        """One item per event (``topic``, ``bins``, ``mode``: int arrays of the same length)."""
        item = np.empty(len(topic), dtype=np.int64)
        value = topic + 1.0 - rng.random(len(topic))                  # in (c, c + 1]
        key = mode.astype(np.int64) * self.n_bins + bins
        srt = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.r_[True, key[srt][1:] != key[srt][:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:]):
            idx = srt[a:b]
            m, bn = divmod(int(key[idx[0]]), self.n_bins)
            pos = np.searchsorted(self.cdf[m][bn], value[idx], side="left")
            item[idx] = self.order[np.minimum(pos, len(self.order) - 1)]
        return item


def _sessions(cfg: ChurnConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events in user-major time order: (user [E], first event of its session [E], seconds from start [E])."""
    U, T = cfg.n_users, cfg.days * DAY
    activity = rng.lognormal(-cfg.activity_sigma ** 2 / 2, cfg.activity_sigma, U)
    n_sess = np.maximum(1, rng.poisson(cfg.events_per_user / cfg.session_events * activity))
    S = int(n_sess.sum())
    sess_user = np.repeat(np.arange(U), n_sess)
    length = np.minimum(rng.geometric(1.0 / cfg.session_events, S), MAX_SESSION_EVENTS)
    ev_sess = np.repeat(np.arange(S), length)
    first_idx = np.r_[0, np.cumsum(length)[:-1]]
    pos = np.arange(len(ev_sess)) - first_idx[ev_sess]
    gaps = np.where(pos == 0, 0, 5 + np.minimum(np.floor(rng.exponential(75.0, len(ev_sess))), 600)).astype(np.int64)
    offset = _grouped_cumsum(gaps, length)
    duration = offset[first_idx + length - 1]
    # place the sessions in the user's window, in order, at least SESSION_GAP apart
    span = T * rng.uniform(0.5, 1.0, U)
    used = np.bincount(sess_user, weights=duration + SESSION_GAP, minlength=U)
    span = np.minimum(np.maximum(span, used), T)
    begin = rng.uniform(0.0, 1.0, U) * (T - span)
    slack = np.maximum(span - used, 0.0)
    r = rng.random(S)
    r = r[np.lexsort((r, sess_user))]                               # sorted within each user
    shift = _grouped_cumsum(np.r_[0, duration[:-1] + SESSION_GAP], n_sess)
    shift -= shift[np.r_[0, np.cumsum(n_sess)[:-1]]][sess_user]     # exclusive within the user
    sess_start = np.floor(begin[sess_user] + r * slack[sess_user] + shift).astype(np.int64)
    t = sess_start[ev_sess] + offset
    user = sess_user[ev_sess]
    own = np.arange(len(user)) - np.r_[0, np.cumsum(np.bincount(user, minlength=U))[:-1]][user]
    keep = (own < cfg.max_events_per_user) & (t < T)
    return user[keep], (pos == 0)[keep], t[keep]


def _grouped_cumsum(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each group (groups contiguous, of the given sizes)."""
    cs = np.cumsum(values)
    ends = np.cumsum(sizes)
    base = np.r_[0, cs[ends[:-1] - 1]]
    return cs - np.repeat(base, sizes)


def _topics(cfg: ChurnConfig, rng: np.random.Generator, pref: np.ndarray, user: np.ndarray,
            first: np.ndarray) -> np.ndarray:
    """Per event a topic: a Markov chain within each session (keep the previous topic with ``stickiness``)."""
    E = len(user)
    cum = np.cumsum(pref, axis=1)
    fresh = np.minimum((cum[user] < rng.random(E)[:, None]).sum(axis=1), cfg.n_topics - 1)
    reset = first | (rng.random(E) >= cfg.stickiness)
    last = np.maximum.accumulate(np.where(reset, np.arange(E), 0))
    return fresh[last]


def _dedupe(rng: np.random.Generator, sampler: _Sampler, user: np.ndarray, topic: np.ndarray, bins: np.ndarray,
            mode: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Redraw repeated (user, item) pairs (the later event); keep-mask of the events (False: nothing left)."""
    def duplicates() -> np.ndarray:
        _, first = np.unique(user.astype(np.int64) * n_items + item, return_index=True)
        dup = np.ones(len(item), dtype=bool)
        dup[first] = False                       # user-major time order: the first occurrence stays
        return dup

    for attempt in range(30):
        dup = duplicates()
        if not dup.any():
            return np.ones(len(item), dtype=bool)
        m = mode[dup] if attempt < 10 else np.zeros(int(dup.sum()), dtype=np.int64)
        item[dup] = sampler.draw(rng, topic[dup], bins[dup], m)
    keep = np.ones(len(item), dtype=bool)
    bounds = np.r_[0, np.cumsum(np.bincount(user))]
    for e in np.flatnonzero(duplicates()):
        u = user[e]
        rows = np.arange(bounds[u], bounds[u + 1])
        seen = set(item[rows[(rows != e) & keep[rows]]].tolist())
        w = sampler.weight[bins[e]].copy()
        w[list(seen)] = 0.0
        same = np.where(sampler.item_topic == topic[e], w, 0.0)
        w = same if same.sum() > 0 else w
        if w.sum() <= 0:
            keep[e] = False
            continue
        item[e] = int(rng.choice(n_items, p=w / w.sum()))
    return keep


def generate_churn(config: ChurnConfig | None = None) -> SynthStream:
    """Generate an item-churn stream; deterministic for a given ``config`` (including ``seed``)."""
    cfg = config or ChurnConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    items = _items(cfg, rng)
    sampler = _Sampler(cfg, items)
    user, first, t = _sessions(cfg, rng)
    C = cfg.n_topics
    pref = (1.0 - cfg.explore) * rng.dirichlet(np.full(C, cfg.topic_concentration), cfg.n_users) + cfg.explore / C
    follower = rng.random(cfg.n_users) < cfg.follower_share
    topic = _topics(cfg, rng, pref, user, first)
    bins = np.minimum(t // sampler.bin_s, sampler.n_bins - 1)
    mode = (follower[user] & (rng.random(len(user)) < cfg.follow) & sampler.recent_ok[bins, topic]).astype(np.int64)
    item = sampler.draw(rng, topic, bins, mode)
    keep = _dedupe(rng, sampler, user, topic, bins, mode, item, cfg.n_items)
    user, t, item = user[keep], t[keep], item[keep]
    # ratings: the user's affinity for the item's topic and the item's appeal
    affinity = pref[user, items.topic[item]] / pref.max(axis=1)[user]
    z = np.log(items.appeal[item]) / cfg.appeal_sigma if cfg.appeal_sigma > 0 else 0.0
    mean = 1.5 + 2.5 * affinity + 0.5 * z + rng.normal(0.0, 0.3, cfg.n_users)[user]
    ratings = np.clip(np.rint(mean + rng.normal(0.0, 0.6, len(user))), 1, 5).astype(np.float32)
    ts = (cfg.start + t).astype(np.float64)
    seq = np.arange(len(user))
    perm = np.lexsort((seq, user, ts))
    users_str = np.array([f"u{n + 1}" for n in range(cfg.n_users)], dtype=object)
    items_str = np.array([f"i{n + 1}" for n in range(cfg.n_items)], dtype=object)
    truth = _truth(cfg, items, items_str, users_str[follower].tolist(),
                   churn_summary(cfg, user, item, ts, ratings, items.topic, items.release + cfg.start,
                                 follower, first[keep]))
    log.info("synth --item-churn: %d events, %d users, %d items; new-item share of second-half positives %.3f",
             len(user), cfg.n_users, cfg.n_items, truth["summary"]["new_item_share_second_half_positives"])
    return SynthStream(user_ids=users_str[user[perm]], item_ids=items_str[item[perm]], ratings=ratings[perm],
                       timestamps=ts[perm], truth=truth)


def _truth(cfg: ChurnConfig, items: _Items, items_str: np.ndarray, followers: list[str],
           summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "item_churn",
        "description": "Ground truth of metarec synth --item-churn. items: release (epoch seconds; before the "
                       "stream's start for the starting catalog), topic, appeal (attention multiplier, log-normal) "
                       "and half_life_days of its attention after the rise. followers: users whose events mostly pick "
                       "among the items released within recent_days. summary.new_item_share_*: share of the events "
                       "at or after the midpoint (and of those rated ≥ 4) whose item was released after the midpoint.",
        "seed": cfg.seed,
        "config": {**asdict(cfg), "new_share_range": list(cfg.new_share_range)},
        "midpoint": cfg.start + cfg.days * DAY / 2,
        "items": {str(items_str[j]): {"release": int(cfg.start + items.release[j]), "topic": int(items.topic[j]),
                                      "appeal": round(float(items.appeal[j]), 4),
                                      "half_life_days": round(float(items.half_life[j] / DAY), 3)}
                  for j in range(len(items_str))},
        "followers": followers,
        "summary": summary,
    }


def churn_summary(cfg: ChurnConfig, user: np.ndarray, item: np.ndarray, ts: np.ndarray, ratings: np.ndarray,
                  item_topic: np.ndarray, release: np.ndarray, follower: np.ndarray,
                  first: np.ndarray) -> dict[str, Any]:
    """Summary figures of a generated stream (events in user-major time order; ``release`` in epoch seconds).

    ``first`` [E] marks the first event of each session; ``follower`` [U] the followers.
    """
    mid = cfg.start + cfg.days * DAY / 2
    second, new, positive = ts >= mid, release[item] > mid, ratings >= 4
    recent = ts - release[item] <= cfg.recent_days * DAY
    fol = follower[user]
    topic = item_topic[item]
    pairs = ~first[1:] & (user[1:] == user[:-1])                    # consecutive events of one session
    counts = np.zeros((cfg.n_users, cfg.n_topics))
    np.add.at(counts, (user, topic), 1.0)
    n = counts.sum(axis=1)

    def share(mask: np.ndarray, of: np.ndarray) -> float | None:
        return round(float(mask[of].mean()), 4) if of.any() else None

    positives_share = share(new, second & positive)
    return {
        "events": int(len(user)), "users": int(len(np.unique(user))), "items": cfg.n_items,
        "items_seen": int(len(np.unique(item))), "items_released_during_stream": cfg.n_new_items,
        "followers": int(follower.sum()), "positive_share": share(positive, np.ones(len(user), dtype=bool)),
        "second_half_events": int(second.sum()),
        "new_item_share_second_half": share(new, second),
        "new_item_share_second_half_positives": positives_share,
        "new_item_share_in_range": positives_share is not None
        and cfg.new_share_range[0] <= positives_share <= cfg.new_share_range[1],
        "follower_recent_share": share(recent, fol), "others_recent_share": share(recent, ~fol),
        "session_same_topic_share": share(topic[1:] == topic[:-1], pairs),
        "same_user_topic_chance": round(float((counts * (counts - 1)).sum() / max((n * (n - 1)).sum(), 1.0)), 4),
    }

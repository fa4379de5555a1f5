"""Meta-training: task sampling, item-side pre-training, the outer loop (vocabularies: :mod:`adapters.meta.vocab`).

A *task* is one user at one moment: ``split="time"`` cuts each user's event sequence at several points
(support = up to ``window`` events before the cut, query = the next ``query_size`` events — what the stream
worker faces); ``split="random"`` shuffles a user's events (query = ``query_size`` random events, support =
the rest — the MeLU protocol). ``mf`` first pre-trains its item side with a full-softmax MF over the training
events (free per-user vectors), then meta-trains everything, θ0 included. ``train(..., init=checkpoint)`` starts
from a previous version instead (:mod:`adapters.meta.warmstart`). The settings (:class:`TrainConfig`) and
the per-model defaults they fall back on live in :mod:`adapters.meta.config`.

Example
-------
>>> from adapters.meta.training import TrainConfig, train            # doctest: +SKIP
>>> ck = train(load_dataset("ml-100k"), TrainConfig(model="mf", meta="fomaml", epochs=3))  # doctest: +SKIP
>>> ck.save("checkpoints/mf")                                   # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from adapters.base import Adapter, SupportBatch
from adapters.meta.checkpoint import Checkpoint, training_fingerprint
from adapters.meta.config import (DEFAULT_INNER_LR, DEFAULT_INNER_LR_RATING, DEFAULT_ITEMS, DEFAULT_PROX,
                                  DEFAULT_RATING_SOLVER, DEFAULT_RIDGE_LAMBDA, DEFAULT_RIDGE_MEAN, HALF_LIFE_EVENTS,
                                  TrainConfig, check_learners)
from adapters.errors import MetarecError
from adapters.online.items.config import ItemConfig
from adapters.meta.inner import InnerConfig
from adapters.meta.learners import ALL_META, META_LEARNERS, MetaLearner, build_meta_learner
from adapters.meta.vocab import Vocab, build_vocab, feature_codes
from adapters.meta.warmstart import WarmStart, warm_start
from adapters.models import MODEL_NAMES, AdapterModule, build_model
from adapters.models.mf import MFAdapter

log = logging.getLogger(__name__)


@dataclass
class UserEvents:
    user_row: int
    items: np.ndarray  #: int64 item rows, time order
    ratings: np.ndarray  #: float32, NaN = implicit


def encode_users(ds: Any, vocab: Vocab, exclude: frozenset[str] = frozenset()) -> list[UserEvents]:
    """Group the events by user (time order kept); users sorted by id for determinism."""
    item_index = {i: r for r, i in enumerate(vocab.item_ids)}
    user_index = {u: r for r, u in enumerate(vocab.user_ids) if r > 0}
    items = np.array([item_index.get(i, 0) for i in ds.item_ids.tolist()], dtype=np.int64)
    uniq, inverse = np.unique(ds.user_ids.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    out = []
    for k, uid in enumerate(uniq.tolist()):
        if uid in exclude:
            continue
        idx = order[bounds[k]:bounds[k + 1]]
        out.append(UserEvents(user_index.get(uid, 0), items[idx], ds.ratings[idx].astype(np.float32)))
    return out


Task = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # user row, s items, s ratings, q items, q ratings


def sample_tasks(users: list[UserEvents], split: str, rng: np.random.Generator, window: int = 32,
                 query_size: int = 8) -> list[Task]:
    """One epoch of tasks (see the module docstring), shuffled."""
    tasks: list[Task] = []
    for ue in users:
        n = len(ue.items)
        if n < 2:
            continue
        if split == "time":
            start = int(rng.integers(1, query_size + 1))
            for c in range(min(start, n - 1), n, query_size):
                lo, hi = max(0, c - window), min(n, c + query_size)
                tasks.append((ue.user_row, ue.items[lo:c], ue.ratings[lo:c], ue.items[c:hi], ue.ratings[c:hi]))
        elif split == "random":
            perm = rng.permutation(n)
            q = min(query_size, n // 2) if n <= 2 * query_size else query_size
            qi, si = perm[:q], perm[q:]
            tasks.append((ue.user_row, ue.items[si], ue.ratings[si], ue.items[qi], ue.ratings[qi]))
        else:
            raise MetarecError(f"unknown split {split!r} (choose time or random)")
    order = rng.permutation(len(tasks))
    return [tasks[i] for i in order]


def to_batches(tasks: list[Task]) -> tuple[SupportBatch, SupportBatch]:
    users = [t[0] for t in tasks]
    support = SupportBatch.from_lists([t[1] for t in tasks], [t[2] for t in tasks], users)
    query = SupportBatch.from_lists([t[3] for t in tasks], [t[4] for t in tasks], users)
    return support, query


def pretrain_mf(model: MFAdapter, users: list[UserEvents], epochs: int, seed: int, batch: int = 2048,
                lr: float = 0.01, learn_rows: np.ndarray | None = None) -> list[float]:
    """Full-softmax MF with free per-user vectors: fits the item side and a starting θ0 (mean user).

    ``learn_rows`` (bool ``[n_items]``, a warm start's new items): only those item rows learn; the other rows, the
    global mean and θ0 stay as they are (None: everything learns and θ0's user part becomes the mean fitted user).
    """
    if epochs <= 0 or not users or (learn_rows is not None and not learn_rows.any()):
        return []
    gen = torch.Generator().manual_seed(seed)
    n = len(users)
    free = torch.nn.Parameter(model.init_states(torch.zeros(n, dtype=torch.long)).detach().clone()
                              + 0.01 * torch.randn(n, model.state_dim, generator=gen))
    u_idx = torch.from_numpy(np.concatenate([np.full(len(ue.items), k) for k, ue in enumerate(users)]))
    it = torch.from_numpy(np.concatenate([ue.items for ue in users]))
    rt = torch.from_numpy(np.concatenate([ue.ratings for ue in users]))
    rated = ~torch.isnan(rt)
    rt = torch.nan_to_num(rt)
    tables = [model.item_emb, model.item_bias, model.item_rate, model.item_rate_bias]
    params = [free, *tables, model.global_mean] if learn_rows is None else [free, *tables]
    hooks = [] if learn_rows is None else [t.register_hook(_row_mask(learn_rows, t)) for t in tables]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(it), generator=gen)
        total, count = 0.0, 0
        for s in range(0, len(perm), batch):
            b = perm[s:s + batch]
            one = SupportBatch(it[b, None], rt[b, None], torch.ones(len(b), 1, dtype=torch.bool), rated[b, None],
                               torch.zeros(len(b), dtype=torch.long))
            rows = torch.nn.functional.embedding(u_idx[b], free)  # (advanced indexing's backward is not reproducible)
            loss = model.pretrain_loss(rows, one).mean() + 1e-4 * (rows ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(b), count + len(b)
        losses.append(total / max(count, 1))
    for h in hooks:
        h.remove()
    if learn_rows is None:
        with torch.no_grad():
            # numpy's mean (pairwise, one thread): torch's threaded reduction over dim 0 does not add in a fixed order
            model.user0.copy_(torch.from_numpy(free.detach().numpy().astype(np.float64).mean(0).astype(np.float32)))
    return losses


def _row_mask(rows: np.ndarray, table: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A gradient hook that zeroes the gradient of every row of ``table`` outside ``rows`` (Adam then leaves those
    rows exactly as they are: a zero gradient has zero moments)."""
    mask = torch.from_numpy(rows).to(table.dtype).reshape(-1, *([1] * (table.dim() - 1)))
    return lambda grad: grad * mask


def _reset_item_rows(model: Adapter, users: list[UserEvents]) -> None:
    """Row 0 and items never seen in training ← the mean learned item (a generic new item)."""
    if not model.ITEM_TABLES:  # melu: its item rows are features, no table to reset
        return
    seen = np.zeros(model.n_items, dtype=bool)
    for ue in users:
        seen[ue.items] = True
    seen[0] = False
    if not seen.any():
        return
    unseen = torch.from_numpy(~seen)
    with torch.no_grad():
        for p in model.item_tables():
            p[unseen] = p[torch.from_numpy(seen)].mean(0)


def _item_state(cfg: TrainConfig, part: Any, vocab: Vocab) -> tuple[dict[str, Any], dict[str, Any]]:
    """The online item state's settings and its starting point: each item's events decayed in event time to the end
    of the training data (``{"counts", "t"}``)."""
    t = np.asarray(part.timestamps, np.float64)
    half_life = cfg.item_half_life
    if half_life is None:  # the event time the last HALF_LIFE_EVENTS events span: the rate serving starts at
        recent = t[-min(len(t), HALF_LIFE_EVENTS):]
        half_life = max(float(recent.max() - recent.min()), 60.0)
    over = {"popularity_weight": cfg.popularity_weight, "bias_lr": cfg.bias_lr, "half_life_s": half_life}
    items = ItemConfig.from_dict(DEFAULT_ITEMS[cfg.model]).overridden(**over)
    index = {i: r for r, i in enumerate(vocab.item_ids)}
    rows = np.array([index.get(i, 0) for i in part.item_ids.tolist()], dtype=np.int64)
    end = float(t.max())
    counts = np.bincount(rows, weights=np.exp2(-(end - t) / items.half_life_s), minlength=len(vocab.item_ids))
    counts[0] = 0.0
    return items.to_dict(), {"counts": [round(float(c), 4) for c in counts], "t": end}


def inner_config(cfg: TrainConfig) -> InnerConfig:
    """The inner-loop configuration ``train`` gives its model: ``cfg``'s settings, the model's defaults where unset
    (also what a served checkpoint adapts with)."""
    m = cfg.model
    return InnerConfig(steps=cfg.steps, lr=cfg.inner_lr or DEFAULT_INNER_LR[m],
                       lr_rating=DEFAULT_INNER_LR_RATING[m] if cfg.inner_lr_rating is None else cfg.inner_lr_rating,
                       prox=DEFAULT_PROX[m] if cfg.prox is None else cfg.prox,
                       metasgd=_rates_of(cfg.meta) == "per_parameter", per_step_lr=_rates_of(cfg.meta) == "per_step",
                       rating_solver=cfg.rating_solver or DEFAULT_RATING_SOLVER[m],
                       ridge_lambda=DEFAULT_RIDGE_LAMBDA[m] if cfg.ridge_lambda is None else cfg.ridge_lambda,
                       ridge_mean=DEFAULT_RIDGE_MEAN[m] if cfg.ridge_mean is None else cfg.ridge_mean,
                       task_learner=cfg.task_learner)


def _rates_of(meta: str) -> str:
    """The kind of inner rates meta-learner ``meta`` learns (what the served checkpoint adapts with)."""
    cls = META_LEARNERS.get(meta)
    return cls.RATES if cls is not None else "fixed"


def _build(cfg: TrainConfig, part: Any, vocab: Vocab, init: Checkpoint | None) -> AdapterModule:
    """The model to train over ``vocab``: the rating range of ``part``; a warm start keeps ``init``'s architecture."""
    rated = part.ratings[~np.isnan(part.ratings)]
    if len(rated):
        lo, hi, mean = float(rated.min()), float(rated.max()), float(rated.mean())
    else:
        lo, hi, mean = 0.0, 1.0, 1.0
    base = dict(init.config.get("model_config") or {}) if init is not None else {}
    mcfg = {**base, "rating_min": lo, "rating_max": hi, "global_mean": mean, **cfg.model_config}
    if not len(rated):
        mcfg.setdefault("rating_weight", 0.0)
    model = build_model(cfg.model, len(vocab.item_ids), vocab.tables, mcfg, inner_config(cfg))
    model.reseed(cfg.seed)
    return model


def _pretrain(model: AdapterModule, users: list[UserEvents], cfg: TrainConfig, warm: WarmStart | None) -> list[float]:
    """Item-side pre-training (mf, seq: the matrix-factorization models; melu's item side is its feature embeddings,
    trained with the rest): all of it when cold; when warm only the new items' rows (module docstring of
    :mod:`adapters.meta.warmstart`). seq's context space starts as the pre-trained item space (its new rows when warm)."""
    if not isinstance(model, MFAdapter):
        return []
    rows = None if warm is None else warm.new_rows
    pre = pretrain_mf(model, users, cfg.pretrain_epochs, cfg.seed, learn_rows=rows)
    model.after_pretrain(None if rows is None else torch.from_numpy(rows))
    return pre


def clipped_parameters(model: AdapterModule, learner: MetaLearner) -> list[torch.nn.Parameter]:
    """The parameters whose gradients are clipped together, in the order their norms are summed: the model's with
    the meta-learner's at ``model.rates_slot``, where they were when the model carried them (a float sum depends on
    its order: the same seed trains the same weights as before they moved)."""
    own = list(model.parameters())
    return own[:model.rates_slot] + list(learner.parameters()) + own[model.rates_slot:]


def _meta_train(model: AdapterModule, learner: MetaLearner, users: list[UserEvents], cfg: TrainConfig,
                rng: np.random.Generator, on_step: Callable[[int, int, int, float], None] | None
                ) -> list[dict[str, float]]:
    """The outer loop: ``cfg.epochs`` epochs of tasks, one Adam step per batch of ``cfg.batch_users`` tasks, on the
    model's and the meta-learner's parameters."""
    params = clipped_parameters(model, learner)
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=cfg.outer_lr)
    epochs: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        t1 = time.perf_counter()
        tasks = sample_tasks(users, cfg.split, rng, cfg.window, cfg.query_size)
        n_steps = math.ceil(len(tasks) / cfg.batch_users)
        total = 0.0
        for step in range(n_steps):
            model.resample_negatives(rng)
            support, query = to_batches(tasks[step * cfg.batch_users:(step + 1) * cfg.batch_users])
            loss = learner.objective(model, support, query, progress=(epoch + step / n_steps) / cfg.epochs)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            total += loss.item()
            if on_step is not None:
                on_step(epoch, step, n_steps, total / (step + 1))
        epochs.append({"epoch": epoch + 1, "meta_loss": total / max(n_steps, 1), "tasks": len(tasks),
                       "seconds": time.perf_counter() - t1})
        log.info("epoch %d: meta-loss %.4f (%d tasks, %.1fs)", epoch + 1, epochs[-1]["meta_loss"], len(tasks),
                 epochs[-1]["seconds"])
    return epochs


def train(ds: Any, cfg: TrainConfig, on_step: Callable[[int, int, int, float], None] | None = None,
          init: Checkpoint | None = None) -> Checkpoint:
    """Meta-train ``cfg.model`` with ``cfg.meta`` on ``ds`` (its first ``cfg.history`` fraction).

    Parameters
    ----------
    ds : Dataset
        The events (time order).
    cfg : TrainConfig
        The settings.
    on_step : callable, optional
        Called after every outer step with ``(epoch, step, steps per epoch, mean meta-loss of the epoch so far)``.
    init : Checkpoint, optional
        Warm start: begin from this previous version instead of from scratch (:mod:`adapters.meta.warmstart`):
        its parameters are copied, its item rows by item id; item-side pre-training is reduced to the new items'
        rows. It must be a ``cfg.model`` model; its architecture (``model_config``) is kept. The checkpoint
        records the warm start under ``config["warm_start"]`` and ``metrics["warm_start"]``.

    Returns
    -------
    Checkpoint
        The trained model with its vocabularies, configuration and training metrics.
    """
    if cfg.model not in MODEL_NAMES:
        raise MetarecError(f"unknown model {cfg.model!r} (choose {', '.join(MODEL_NAMES)})")
    if cfg.meta not in ALL_META:
        raise MetarecError(f"unknown meta-learner {cfg.meta!r} (choose {', '.join(ALL_META)})")
    check_learners(cfg.meta, cfg.task_learner, cfg.model)
    if not 0 < cfg.history <= 1:
        raise MetarecError(f"--history must be in (0, 1], got {cfg.history}")
    if init is not None and init.model != cfg.model:
        raise MetarecError(f"cannot warm-start a {cfg.model} model from a {init.model} checkpoint ({init.version})")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    part = ds.slice(0, int(math.floor(len(ds) * cfg.history))) if cfg.history < 1 else ds
    if len(part) < 2:
        raise MetarecError("not enough training events")
    vocab = build_vocab(part, items_from_features=(cfg.model == "melu"))
    users = encode_users(part, vocab, cfg.exclude_users)
    model = _build(cfg, part, vocab, init)
    learner = build_meta_learner(cfg.meta, model)
    t0 = time.perf_counter()
    warm = warm_start(model, learner, init, vocab.item_ids) if init is not None else None
    pre = _pretrain(model, users, cfg, warm)
    pre_s = time.perf_counter() - t0
    epochs = _meta_train(model, learner, users, cfg, rng, on_step)
    _reset_item_rows(model, users)
    model.finalize()
    model.eval()
    model.requires_grad_(False)
    learner.requires_grad_(False)
    metrics = {"pretrain_loss": pre, "pretrain_seconds": pre_s, "epochs": epochs,
               "train_events": int(len(part)), "train_users": len(users)}
    train_cfg = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(cfg).items()
                 if k != "exclude_users"}
    items, popularity = _item_state(cfg, part, vocab)
    config = {"items": items, "popularity": popularity, "history": cfg.history, "dataset": cfg.dataset_spec or ds.name, "dataset_name": ds.name,
              "dataset_fingerprint": ds.fingerprint, "part": cfg.part, "training": train_cfg}
    if warm is not None:
        config["warm_start"] = warm.to_dict()
        metrics["warm_start"] = {"from_version": warm.from_version, "new_items": warm.new_items}
        log.info("warm-started from %s: %d items copied, %d new, %d dropped", warm.from_version, warm.shared_items,
                 warm.new_items, warm.dropped_items)
    return Checkpoint.from_adapter(model, vocab.item_ids, cfg.meta, user_ids=vocab.user_ids,
                                   item_titles=vocab.item_titles, genre_names=vocab.genre_names,
                                   item_features=feature_codes(ds.item_features), config=config,
                                   fingerprint=training_fingerprint(ds.fingerprint, cfg.history, cfg.part),
                                   metrics=metrics)

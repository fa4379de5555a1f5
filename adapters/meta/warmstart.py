"""Warm start: a new model version that begins where the previous one ended.

:func:`adapters.meta.training.train` given ``init=`` a :class:`~adapters.meta.checkpoint.Checkpoint` builds the
new model over the new data's vocabulary as usual, then :func:`warm_start` copies the previous version into it:

* every parameter that is not per item (θ0's user part, the user-feature embeddings, the rating head's global
  mean, seq's recency ``rho``, melu's decision layers and feature embeddings) and every parameter of the new
  meta-learner (Meta-SGD's and MAML++'s learned inner rates ``rates.log_lr``/``rates.log_lr_steps``, the bayes
  prior precision ``prior.log_prior_prec``: :mod:`adapters.meta.rates`) is copied as it is. Exceptions, listed in
  :attr:`WarmStart.fresh`: a parameter the new configuration fixes rather than trains (the inner rates
  ``rates.log_lr`` unless Meta-SGD: the new configuration's rates hold) and one whose shape changed (a feature
  table of another cardinality);
* the per-item tables (:meth:`~adapters.base.Adapter.item_row_keys`: ``mf``'s ``ITEM_TABLES``, seq's ``ctx_emb``
  with them, melu's id embedding) are copied row by row *by item id*, for the items both vocabularies hold (row 0, the generic unknown
  item, included); an item new to the vocabulary keeps its fresh initialisation, an item the new data no longer
  holds is dropped;
* buffers (feature codes of the new vocabulary's items and users, melu's negative pool) are the new model's own.

Item-side pre-training is then *reduced* (:func:`adapters.meta.training.pretrain_mf` with ``learn_rows``): only
the rows of the new items learn, the copied rows and θ0 stay as they are, so that a new item starts from a fit to
its events instead of a random vector; when there is no new item it is skipped. The checkpoint records the warm
start (:meth:`WarmStart.to_dict`) under ``config["warm_start"]``: the version it started from and its *lineage*,
the versions it descends from, newest first (the online learner keeps the rows it learned for items a new version
does not know only when that version descends from the one it serves: see :mod:`adapters.online.carryover`).

Example
-------
>>> import torch
>>> from adapters.models import FeatureTables, build_model
>>> from adapters.meta.checkpoint import Checkpoint
>>> from adapters.meta.learners import MAML
>>> old = build_model("mf", 3, FeatureTables.empty(3), {"dim": 4, "rating_dim": 2})
>>> ck = Checkpoint.from_adapter(old, ["<unk>", "a", "b"], "fomaml")
>>> new = build_model("mf", 3, FeatureTables.empty(3), {"dim": 4, "rating_dim": 2})
>>> ws = warm_start(new, MAML(new), ck, ["<unk>", "b", "c"])       # "a" dropped, "c" new
>>> (ws.shared_items, ws.new_items, ws.dropped_items), ws.from_version == ck.version
((1, 1, 1), True)
>>> torch.equal(new.item_emb[1], old.item_emb[2])       # "b" moved from row 2 to row 1
True
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from adapters.base import Adapter
from adapters.errors import MetarecError

if TYPE_CHECKING:
    from adapters.meta.checkpoint import Checkpoint
    from adapters.meta.learners import MetaLearner
    from adapters.models import AdapterModule

log = logging.getLogger(__name__)

#: versions kept in a checkpoint's lineage (newest first)
LINEAGE_LENGTH = 32


@dataclass
class WarmStart:
    """What :func:`warm_start` copied (stored in the checkpoint's ``config["warm_start"]``)."""

    from_version: str  #: the version the new one started from
    lineage: list[str]  #: versions the new one descends from, newest first (``from_version`` first)
    shared_items: int  #: catalog items both vocabularies hold (rows copied)
    new_items: int  #: items only the new vocabulary holds (fresh rows)
    dropped_items: int  #: items only the previous vocabulary held
    fresh: list[str] = field(default_factory=list)  #: non-item parameters not copied (see the module docstring)
    new_rows: np.ndarray | None = None  #: bool [n_items] of the new model: rows of the new items

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("new_rows")
        return out


def item_row_keys(adapter: Adapter) -> tuple[str, ...]:
    """The state-dict keys of ``adapter``'s per-item tables (one row per item row)."""
    return adapter.item_row_keys()


def row_map(old_ids: Sequence[str], new_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(new_rows, old_rows)``: the rows of every item both vocabularies hold (row 0, the unknown item, first).

    >>> row_map(["<unk>", "a", "b"], ["<unk>", "b", "c"])
    (array([0, 1]), array([0, 2]))
    """
    old_index = {i: r for r, i in enumerate(old_ids)}
    pairs = [(0, 0)] + [(r, old_index[i]) for r, i in enumerate(new_ids) if r > 0 and i in old_index and old_index[i] > 0]
    new_rows, old_rows = (np.array(x, dtype=np.int64) for x in zip(*pairs))
    return new_rows, old_rows


def lineage(init: Checkpoint) -> list[str]:
    """The lineage a version warm-started from ``init`` has: ``init``'s version, then ``init``'s lineage."""
    previous = (init.config or {}).get("warm_start", {}).get("lineage", [])
    return ([init.version] + [v for v in previous if v != init.version])[:LINEAGE_LENGTH]


def descends_from(checkpoint: Checkpoint, version: str) -> bool:
    """True when ``checkpoint`` is ``version`` or was warm-started from it (directly or through other versions)."""
    if checkpoint.version == version:
        return True
    return version in ((checkpoint.config or {}).get("warm_start", {}).get("lineage", []))


def _copy(params: list[tuple[str, nn.Parameter]], old: dict[str, torch.Tensor], rows: set[str],
          new_rows: np.ndarray, old_rows: np.ndarray) -> list[str]:
    """Copy ``old`` into ``params`` (item tables ``rows`` row by row); the names of those left fresh."""
    fresh: list[str] = []
    with torch.no_grad():
        for name, p in params:
            src = old.get(name)
            if src is None or not p.requires_grad and name not in rows:
                fresh.append(name)
            elif name in rows:
                if src.shape[1:] != p.shape[1:]:
                    raise MetarecError(f"cannot warm-start: item table {name} has rows of {tuple(src.shape[1:])}, "
                                       f"the new model {tuple(p.shape[1:])} (another architecture)")
                p[torch.from_numpy(new_rows)] = src[torch.from_numpy(old_rows)].to(p.dtype)
            elif src.shape != p.shape:
                fresh.append(name)
            else:
                p.copy_(src)
    return fresh


def warm_start(model: AdapterModule, learner: MetaLearner, init: Checkpoint, new_ids: Sequence[str]) -> WarmStart:
    """Copy checkpoint ``init`` into the freshly built ``model`` whose item rows are ``new_ids``, and into the
    meta-learner ``learner`` that trains it (in place).

    Parameters
    ----------
    model : AdapterModule
        The new model, built over ``new_ids`` with ``init``'s architecture.
    learner : MetaLearner
        Its meta-learner (its inner rates and prior start from ``init``'s where it learns them).
    init : Checkpoint
        The previous version.
    new_ids : sequence of str
        The new model's item vocabulary (row 0 = ``<unk>``).

    Returns
    -------
    WarmStart
        What was copied; ``new_rows`` marks the new model's rows of items ``init`` did not know.
    """
    if init.model != model.name:
        raise MetarecError(f"cannot warm-start a {model.name} model from a {init.model} checkpoint")
    if len(new_ids) != model.n_items:
        raise MetarecError(f"{len(new_ids)} item ids for a model of {model.n_items} item rows")
    old = init.weights()
    rows = set(item_row_keys(model))
    new_rows, old_rows = row_map(init.item_ids, new_ids)
    params = list(model.named_parameters())
    ours = list(learner.named_parameters())
    fresh = _copy(params[:model.rates_slot] + ours + params[model.rates_slot:], old, rows, new_rows, old_rows)
    shapes = {n: p.shape for n, p in params + ours}
    shape_changed = [n for n in fresh if n in old and old[n].shape != shapes[n]]
    if shape_changed:
        log.warning("warm start: %s changed shape, kept fresh", ", ".join(shape_changed))
    is_new = np.ones(model.n_items, dtype=bool)
    is_new[new_rows] = False
    shared = len(new_rows) - 1
    return WarmStart(from_version=init.version, lineage=lineage(init), shared_items=shared,
                     new_items=int(is_new.sum()), dropped_items=len(init.item_ids) - 1 - shared, fresh=fresh,
                     new_rows=is_new)

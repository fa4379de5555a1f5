"""The training data's vocabularies: item rows (row 0 = ``<unk>``) and user rows with their side features.

Example
-------
>>> from adapters.meta.vocab import build_vocab               # doctest: +SKIP
>>> vocab = build_vocab(load_dataset("ml-100k"), items_from_features=False)   # doctest: +SKIP
>>> vocab.item_ids[:2]                                        # doctest: +SKIP
['<unk>', '1']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adapters.meta.checkpoint import UNK
from adapters.models import FeatureTables


@dataclass
class Vocab:
    item_ids: list[str]
    user_ids: list[str]
    item_titles: dict[str, str]
    genre_names: list[str]
    tables: FeatureTables


def _dense(values: np.ndarray) -> np.ndarray:
    """Codes with 0 = unknown kept, other values mapped to 1..k in sorted order."""
    out = np.zeros(len(values), dtype=np.int64)
    nz = values > 0
    if nz.any():
        out[nz] = np.unique(values[nz], return_inverse=True)[1] + 1
    return out


def build_vocab(ds: Any, items_from_features: bool) -> Vocab:
    """Item rows (row 0 = ``<unk>``) and user rows (row 0 = unknown user) with their side features."""
    event_items = set(ds.item_ids.tolist())
    itf, usf = ds.item_features, ds.user_features
    if itf is not None:
        ordered = [i for i in itf.item_ids if items_from_features or i in event_items]
        known = set(itf.item_ids)
        ordered += sorted(i for i in event_items if i not in known)
    else:
        ordered = sorted(event_items, key=lambda s: (len(s), s))
    item_ids = [UNK] + ordered
    n_genres = itf.genres.shape[1] if itf is not None else 0
    genres = np.zeros((len(item_ids), n_genres), dtype=np.float32)
    year = np.zeros(len(item_ids), dtype=np.int64)
    titles: dict[str, str] = {}
    if itf is not None:
        pos = {i: r for r, i in enumerate(itf.item_ids)}
        rows = [(r, pos[i]) for r, i in enumerate(item_ids) if i in pos]
        if rows:
            dst, src = map(np.array, zip(*rows))
            genres[dst] = itf.genres[src]
            year[dst] = np.asarray(itf.year)[src]
        titles = {i: itf.titles[pos[i]] for i in item_ids if i in pos}
    if usf is not None:
        user_ids = [UNK] + list(usf.user_ids)
        age = np.concatenate([[0], usf.age]).astype(np.int64)
        gender = np.concatenate([[0], usf.gender]).astype(np.int64)
        occ = np.concatenate([[0], usf.occupation]).astype(np.int64)
    else:
        user_ids = [UNK]
        age = gender = occ = np.zeros(1, dtype=np.int64)
    tables = FeatureTables(torch.from_numpy(genres), torch.from_numpy(_dense(year)), torch.from_numpy(age),
                           torch.from_numpy(gender), torch.from_numpy(occ))
    return Vocab(item_ids, user_ids, titles, list(itf.genre_names) if itf is not None else [], tables)


def feature_codes(features: Any) -> dict[str, list[int]]:
    """Item id → feature codes (its genre indices, then ``n_genres`` + its decade since 1900) for every item the
    dataset describes; empty without item features."""
    if features is None:
        return {}
    n_genres = features.genres.shape[1]
    out: dict[str, list[int]] = {}
    for n, item in enumerate(features.item_ids):
        codes = np.flatnonzero(features.genres[n] > 0).tolist()
        year = int(features.year[n])
        if year > 0:
            codes.append(n_genres + min(max(year // 10 - 190, 0), 15))
        out[str(item)] = codes
    return out

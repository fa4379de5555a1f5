"""A tiny synthetic dataset with side features, shared by the meta-learning-core tests."""
from __future__ import annotations

import numpy as np

from adapters.data.datasets import Dataset, ItemFeatures, UserFeatures


def synthetic_dataset(n_users: int = 40, n_items: int = 40, per_user: tuple[int, int] = (14, 34),
                      seed: int = 0, implicit_share: float = 0.1) -> Dataset:
    """Users prefer one of three item groups; ratings follow group match; a share of events is implicit."""
    rng = np.random.default_rng(seed)
    group_of_item = rng.integers(0, 3, n_items)
    taste = rng.integers(0, 3, n_users)
    u, i, r, t = [], [], [], []
    clock = 1_000_000.0
    for k in range(n_users):
        n = int(rng.integers(*per_user))
        weights = np.where(group_of_item == taste[k], 4.0, 1.0)
        items = rng.choice(n_items, size=n, replace=False, p=weights / weights.sum())
        for it in items:
            match = group_of_item[it] == taste[k]
            rating = float(np.clip(round((4.5 if match else 2.0) + rng.normal(0, 0.7)), 1, 5))
            if rng.random() < implicit_share:
                rating = float("nan")
            clock += float(rng.integers(1, 100))
            u.append(f"u{k}"), i.append(f"i{it}"), r.append(rating), t.append(clock)
    order = np.argsort(np.array(t), kind="stable")
    genres = np.zeros((n_items, 3), dtype=np.float32)
    genres[np.arange(n_items), group_of_item] = 1.0
    itf = ItemFeatures(item_ids=[f"i{j}" for j in range(n_items)], genres=genres, genre_names=["a", "b", "c"],
                       year=rng.integers(1990, 1995, n_items).astype(np.int64),
                       titles=[f"Item {j}" for j in range(n_items)])
    usf = UserFeatures(user_ids=[f"u{k}" for k in range(n_users)], age=rng.integers(1, 4, n_users),
                       gender=rng.integers(1, 3, n_users), occupation=taste + 1, n_age=4, n_gender=3,
                       n_occupation=4, occupation_names=["x", "y", "z"])
    return Dataset(name="synthetic", fingerprint="f" * 64,
                   user_ids=np.array(u, dtype=object)[order], item_ids=np.array(i, dtype=object)[order],
                   ratings=np.array(r, dtype=np.float32)[order], timestamps=np.array(t, dtype=np.float64)[order],
                   item_features=itf, user_features=usf)

"""Warm-started meta-training (adapters/meta/warmstart.py, ``train(..., init=)``): copies by item id, fresh rows for
new items, pre-training reduced to them, a head start over a cold run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic_data import synthetic_dataset

from adapters.errors import MetarecError
from adapters.meta.checkpoint import Checkpoint
from adapters.meta.training import TrainConfig, train
from adapters.meta.warmstart import descends_from, item_row_keys, row_map

SMALL = {"seq": {"dim": 8, "rating_dim": 4}, "mf": {"dim": 8, "rating_dim": 4}, "melu": {"emb_dim": 4, "hidden": 8}}


def _cfg(model: str = "seq", **kw: object) -> TrainConfig:
    base = dict(model=model, meta="fomaml", epochs=1, pretrain_epochs=1, seed=0, model_config=SMALL[model])
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _without(ds, item: str):  # noqa: ANN001, ANN202
    keep = ds.item_ids != item
    return ds.__class__(**{**ds.__dict__, "user_ids": ds.user_ids[keep], "item_ids": ds.item_ids[keep],
                           "ratings": ds.ratings[keep], "timestamps": ds.timestamps[keep]})


def _row(ck: Checkpoint, key: str, item: str) -> torch.Tensor:
    return ck.adapter.state_dict()[key][ck.item_ids.index(item)]


def test_doctests() -> None:
    import doctest

    import adapters.meta.warmstart
    assert doctest.testmod(adapters.meta.warmstart).failed == 0


@pytest.mark.parametrize("model", ["seq", "mf", "melu"])
def test_warm_start_over_the_same_data_reproduces_the_previous_version_before_training(model: str) -> None:
    ds = synthetic_dataset()
    ck = train(ds, _cfg(model, epochs=2))
    warm = train(ds, _cfg(model, epochs=0), init=ck)
    assert warm.item_ids == ck.item_ids
    old = dict(ck.adapter.named_parameters())
    for name, p in warm.adapter.named_parameters():
        torch.testing.assert_close(p, old[name], rtol=0, atol=0, msg=name)
    cold = train(ds, _cfg(model, epochs=0))
    assert not torch.equal(dict(cold.adapter.named_parameters())[item_row_keys(cold.adapter)[0]],
                           old[item_row_keys(cold.adapter)[0]])  # the equality above is the copy, not chance
    ws = warm.config["warm_start"]
    assert ws["from_version"] == ck.version and ws["lineage"] == [ck.version]
    assert (ws["shared_items"], ws["new_items"], ws["dropped_items"]) == (len(ck.item_ids) - 1, 0, 0)
    assert warm.metrics["warm_start"]["from_version"] == ck.version
    assert warm.metrics["pretrain_loss"] == []  # no new item: no pre-training


def test_a_vocabulary_that_gained_and_lost_items_maps_rows_by_id(tmp_path) -> None:  # noqa: ANN001
    ds = synthetic_dataset()
    ck = train(_without(ds, "i3"), _cfg(epochs=1))                     # knows i7, not i3
    new_ds = _without(ds, "i7")                                         # gains i3, loses i7
    warm = train(new_ds, _cfg(epochs=0, pretrain_epochs=0), init=ck)
    assert "i3" in warm.item_index and "i7" not in warm.item_index and "i7" in ck.item_index
    shared = [i for i in warm.item_ids[1:] if i in ck.item_index]
    assert any(warm.item_index[i] != ck.item_index[i] for i in shared)  # rows moved: the copy follows the ids
    for key in item_row_keys(warm.adapter):                             # seq: the four mf tables and ctx_emb
        for item in shared:
            torch.testing.assert_close(_row(warm, key, item), _row(ck, key, item), rtol=0, atol=0)
    fresh = train(new_ds, _cfg(epochs=0, pretrain_epochs=0))            # i3 keeps the fresh initialisation
    for key in item_row_keys(warm.adapter):
        torch.testing.assert_close(_row(warm, key, "i3"), _row(fresh, key, "i3"), rtol=0, atol=0)
    ws = warm.config["warm_start"]
    assert (ws["new_items"], ws["dropped_items"]) == (1, 1)
    # the reduced pre-training moves the new item's rows only
    pre = train(new_ds, _cfg(epochs=0, pretrain_epochs=2), init=ck)
    assert len(pre.metrics["pretrain_loss"]) == 2
    assert not torch.equal(_row(pre, "item_emb", "i3"), _row(warm, "item_emb", "i3"))
    torch.testing.assert_close(_row(pre, "ctx_emb", "i3"), _row(pre, "item_emb", "i3"))
    for item in shared:
        torch.testing.assert_close(_row(pre, "item_emb", item), _row(warm, "item_emb", item), rtol=0, atol=0)
    torch.testing.assert_close(pre.adapter.user0, warm.adapter.user0, rtol=0, atol=0)
    pre.save(tmp_path / "ck")
    loaded = Checkpoint.load(tmp_path / "ck")
    assert loaded.config["warm_start"]["from_version"] == ck.version and descends_from(loaded, ck.version)


def test_a_warm_started_run_on_new_events_starts_from_a_lower_meta_loss() -> None:
    ds = synthetic_dataset(n_users=60, seed=4)
    half = len(ds) // 2
    previous = train(ds.head(half), _cfg(epochs=10, outer_lr=1e-2))
    first: dict[str, float] = {}

    def recorder(name: str):  # noqa: ANN202
        def on_step(epoch: int, step: int, n_steps: int, loss: float) -> None:
            first.setdefault(name, loss)
        return on_step

    warm = train(ds, _cfg(epochs=1), on_step=recorder("warm"), init=previous)
    cold = train(ds, _cfg(epochs=1), on_step=recorder("cold"))
    assert warm.config["warm_start"]["from_version"] == previous.version and "warm_start" not in cold.config
    assert first["warm"] < first["cold"] - 0.2     # (measured: 4.92 against 5.49; rows shuffled by item: 5.53)
    assert warm.metrics["epochs"][0]["meta_loss"] < cold.metrics["epochs"][0]["meta_loss"]


def test_lineage_follows_successive_warm_starts_and_the_model_must_match() -> None:
    ds = synthetic_dataset(n_users=12)
    a = train(ds, _cfg(epochs=0))
    b = train(ds, _cfg(epochs=1, seed=1), init=a)
    c = train(ds, _cfg(epochs=1, seed=2), init=b)
    assert len({a.version, b.version, c.version}) == 3
    assert c.config["warm_start"]["lineage"] == [b.version, a.version]
    assert descends_from(c, a.version) and descends_from(c, c.version) and not descends_from(a, c.version)
    with pytest.raises(MetarecError, match="warm-start"):
        train(ds, _cfg("mf", epochs=0), init=a)


def test_row_map_keeps_the_unknown_row() -> None:
    new, old = row_map(["<unk>", "x"], ["<unk>", "y"])
    assert new.tolist() == [0] and old.tolist() == [0]
    assert np.array_equal(row_map(["<unk>", "a", "b"], ["<unk>", "b", "a"])[1], np.array([0, 2, 1]))

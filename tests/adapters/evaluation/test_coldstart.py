"""The MeLU cold-start protocol on a small synthetic dataset."""
from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic_data import synthetic_dataset

from adapters.meta.checkpoint import Checkpoint
from adapters.evaluation.coldstart import ColdStartConfig, run_coldstart, split_users
from adapters.errors import MetarecError
from adapters.evaluation.metrics import mae, ndcg_at_k, rmse


def test_metrics():
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 3.0])) == pytest.approx(math.sqrt(0.5))
    assert mae(np.array([1.0, 3.0]), np.array([2.0, 3.0])) == 0.5
    assert ndcg_at_k(np.array([0.1, 0.9]), np.array([5.0, 1.0]), 1) == pytest.approx(0.2)
    assert ndcg_at_k(np.array([0.9, 0.1]), np.array([5.0, 1.0]), 1) == 1.0


def test_split_is_seeded_and_respects_rating_counts():
    ds = synthetic_dataset(n_users=60, per_user=(8, 30))
    cfg = ColdStartConfig(seed=3)
    a, sa = split_users(ds, cfg)
    b, _ = split_users(ds, cfg)
    assert a == b and len(a) == len(sa)
    counts = {u: int(((ds.user_ids == u) & ~np.isnan(ds.ratings)).sum()) for u in a}
    assert all(13 <= c <= 100 for c in counts.values())


@pytest.fixture(scope="module")
def report():
    ds = synthetic_dataset(n_users=80, per_user=(16, 34), implicit_share=0.0)
    cfg = ColdStartConfig(model="mf", meta="fomaml", epochs=2, batch_users=16)
    return ds, cfg, run_coldstart(ds, cfg)


def test_report_shape(report):
    ds, cfg, rep = report
    assert rep["protocol"] == "coldstart" and rep["events"] == len(ds)
    assert set(rep["models"]) == {"metarec", "no_adaptation", "erm_finetune", "global_mean"}
    for vals in rep["models"].values():
        assert set(vals) == {"mae", "rmse", "ndcg@1", "ndcg@3"}
        assert all(math.isfinite(v) for v in vals.values())
        assert 0 <= vals["ndcg@3"] <= 1 and vals["mae"] <= vals["rmse"]
    assert rep["details"]["query_events"] == 10 * rep["details"]["new_users"]


def test_adaptation_beats_no_adaptation_on_planted_tastes(report):
    _, _, rep = report
    assert rep["models"]["metarec"]["mae"] < rep["models"]["no_adaptation"]["mae"]


def test_checkpoint_from_another_part_is_refused(report, tmp_path):
    ds, cfg, _ = report
    from adapters.meta.training import TrainConfig, train
    ck = train(ds, TrainConfig(model="mf", epochs=1, pretrain_epochs=0, model_config={"dim": 8, "rating_dim": 4}))
    with pytest.raises(MetarecError, match="not trained on this cold-start"):
        run_coldstart(ds, cfg, checkpoint=ck)
    ck.save(tmp_path / "c")
    with pytest.raises(MetarecError):
        run_coldstart(ds, cfg, checkpoint=Checkpoint.load(tmp_path / "c"))

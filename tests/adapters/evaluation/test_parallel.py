"""The prequential protocol with its models in separate processes gives exactly what one process gives."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
from synthetic_data import synthetic_dataset

import adapters.evaluation.parallel as parallel
from adapters.evaluation.baselines import LearnerModel, Popularity
from adapters.evaluation.cooccurrence import Cooccurrence
from adapters.evaluation.prequential import EventStream, PrequentialConfig, run_protocol
from adapters.meta.training import TrainConfig, train
from adapters.online.config import OnlineConfig
from adapters.online.learner import OnlineLearner


def test_doctests() -> None:
    assert doctest.testmod(parallel).failed == 0


@pytest.fixture(scope="module")
def setting():  # noqa: ANN201
    ds = synthetic_dataset(n_users=40, n_items=40, seed=11)
    ck = train(ds, TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0, history=0.5,
                               model_config={"dim": 8, "rating_dim": 4}))
    return ds, ck


def models(ds, ck):  # noqa: ANN001, ANN201
    stream = EventStream.from_dataset(ds, history=0.5)
    return stream, [LearnerModel(stream, OnlineLearner(ck, OnlineConfig(owner_delay=1)), "metarec"),
                    LearnerModel(stream, OnlineLearner(ck, OnlineConfig(steps=0)), "no_adaptation"),
                    Popularity(stream), Cooccurrence(stream)]


def test_models_in_separate_processes_give_the_same_figures_as_one_process(setting) -> None:
    ds, ck = setting
    config = PrequentialConfig(history=0.5, batch_seconds=60.0)
    stream, ms = models(ds, ck)
    one = run_protocol(stream, ms, config, progress=False)
    stream, ms = models(ds, ck)
    many = parallel.run_parallel(stream, ms, config, workers=2, progress=False)
    assert list(one.traces) == list(many.traces)
    for name in one.traces:
        a, b = one.traces[name], many.traces[name]
        assert np.array_equal(a.rank_array(), b.rank_array()), name
        assert np.allclose(a.prediction_array(), b.prediction_array(), atol=1e-6, equal_nan=True), name
        assert len(a.lists) == len(b.lists) and all(np.array_equal(x, y) for x, y in zip(a.lists, b.lists))
    s1, s2 = one.summary(), many.summary()
    for name in s1:
        assert set(s1[name]) == set(s2[name])
        for key, value in s1[name].items():
            assert s2[name][key] == pytest.approx(value, abs=1e-6), (name, key)
    assert s1["metarec"]["hr@10"] > 0  # the learner ranked something

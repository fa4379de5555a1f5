"""``metarec evaluate --retrain-every N`` (adapters/evaluation/retrain.py): retrainings learn past events only, the
metarec learner switches to them between micro-batches, the default never retrains."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import adapters.evaluation.prequential_run as prequential_run
import adapters.meta.training as training
from adapters.data.datasets import load_dataset
from adapters.data.synth import SynthConfig, generate
from adapters.errors import MetarecError
from adapters.evaluation.baselines import LearnerModel
from adapters.evaluation.config import EvaluationConfig
from adapters.evaluation.retrain import Retraining


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("retrain") / "small.csv"
    generate(SynthConfig(n_users=30, n_items=40, events_per_user=14, n_clusters=4, seed=5)).write(path).unlink()
    return path


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Record, in order, every training given an ``init`` (its dataset) and every step of the metarec model (its
    first event)."""
    calls: list[tuple[str, Any]] = []
    real_train, real_step = training.train, LearnerModel.step

    def train(ds: Any, cfg: Any, on_step: Any = None, init: Any = None) -> Any:
        if init is not None:
            calls.append(("train", ds))
        return real_train(ds, cfg, on_step=on_step, init=init)

    def step(self: LearnerModel, lo: int, hi: int, rank_rows: np.ndarray) -> Any:
        if self.name == "metarec":
            calls.append(("step", lo))
        return real_step(self, lo, hi, rank_rows)

    monkeypatch.setattr(training, "train", train)
    monkeypatch.setattr(LearnerModel, "step", step)
    return calls


def _run(csv_path: Path, **kw: Any) -> dict[str, Any]:
    cfg = EvaluationConfig(dataset=str(csv_path), model="seq", epochs=1, progress=False, batch_size=16, **kw)
    return prequential_run.run_prequential(cfg)


@pytest.mark.parametrize("window", [0, 120])
def test_each_retraining_learns_past_events_only_and_ends_right_before_the_next_scored_event(
        csv_path: Path, monkeypatch: pytest.MonkeyPatch, window: int) -> None:
    calls = _spy(monkeypatch)
    report = _run(csv_path, retrain_every=60, retrain_window=window)
    events = load_dataset(str(csv_path))
    trainings = [n for n, (kind, _) in enumerate(calls) if kind == "train"]
    assert len(trainings) == report["retrain"]["count"] >= 2
    scored_from = report["events"] - report["scored_events"]
    for n in trainings:
        ds = calls[n][1]
        kind, lo = calls[n + 1]                          # the metarec step right after the retraining
        assert kind == "step" and lo > scored_from
        start = max(0, lo - window) if window else 0
        assert len(ds) == lo - start                     # every past event (or the window): none from lo on
        for name in ("user_ids", "item_ids", "timestamps"):
            np.testing.assert_array_equal(getattr(ds, name), getattr(events, name)[start:lo])
        assert ds.timestamps[-1] <= events.timestamps[lo]
    steps = [lo for kind, lo in calls if kind == "step"]
    assert steps == sorted(steps) and steps[0] == scored_from  # each event scored once, in order


def test_retraining_switches_the_metarec_learner_and_reports_it(csv_path: Path) -> None:
    report = _run(csv_path, retrain_every=60)
    section = report["retrain"]
    runs = section["runs"]
    assert section["every"] == 60 and section["window"] is None and section["count"] == len(runs) >= 2
    assert section["seconds"] == pytest.approx(sum(r["seconds"] for r in runs), abs=0.05)
    assert all(b["before_event"] - a["before_event"] >= 60 for a, b in zip(runs, runs[1:]))
    assert len({r["version"] for r in runs} | {report["checkpoint"]["version"]}) == len(runs) + 1
    assert all(r["first_event"] == 0 and r["readapted_users"] > 0 for r in runs)
    assert "retrain" in report["notes"] and {"metarec", "no_adaptation", "erm_finetune"} <= set(report["models"])


def test_without_retrain_every_nothing_is_retrained_and_the_models_are_today_s(csv_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    report = _run(csv_path)
    assert report["retrain"] == {"every": 0, "window": None, "count": 0, "seconds": 0.0, "runs": []}
    assert not [c for c in calls if c[0] == "train"] and "retrain" not in report["notes"]
    models = [object()]
    assert prequential_run._with_retraining(models, None, None, EvaluationConfig(dataset="x")) == (models, None)


def test_bad_retrain_settings_fail_before_any_work(csv_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was loaded before the settings were checked")

    monkeypatch.setattr("adapters.data.datasets.load_dataset", no_work)
    for bad, message in (({"retrain_every": -1}, "retrain-every"), ({"retrain_window": -5, "retrain_every": 9},
                                                                     "retrain-window"),
                         ({"retrain_window": 100}, "needs --retrain-every")):
        with pytest.raises(MetarecError, match=message):
            prequential_run.run_prequential(EvaluationConfig(dataset=str(csv_path), progress=False, **bad))
    with pytest.raises(MetarecError, match="retrain-every"):
        Retraining(object(), every=0, window=0, trainer=lambda *a: None)


def test_the_wrapper_retrains_at_micro_batch_boundaries_after_every_n_scored_events() -> None:
    class Learner:
        checkpoint = carried = None

        def switch(self, ck: Any) -> None:
            self.checkpoint = ck

        def readapt(self, records: dict) -> dict:
            return {}

    class Model:
        name, records, learner = "metarec", {}, Learner()

        def step(self, lo: int, hi: int, rows: np.ndarray) -> None:
            seen.append((lo, hi))

    class Ck:
        def __init__(self, end: int) -> None:
            self.version, self.item_ids, self.config = f"v{end}", ["<unk>"], {}

    seen: list[tuple[int, int]] = []
    asked: list[tuple[int, int]] = []
    model = Retraining(Model(), every=10, window=25, trainer=lambda a, b, init: asked.append((a, b)) or Ck(b))
    for lo in range(100, 160, 4):                        # micro-batches of 4 scored events
        model.step(lo, lo + 4, np.zeros(0, np.int64))
    assert asked == [(87, 112), (99, 124), (111, 136), (123, 148)]   # after 12 scored events each, window 25
    assert all(any(lo == b for lo, _ in seen) for _, b in asked)
    assert model.model.learner.checkpoint.version == "v148" and model.report()["count"] == 4

"""The prequential evaluation run driven by an EvaluationConfig: the library takes the command line it records
from its caller, θ0's inner steps are the learners' unless the config sets them, the CLI builds the config."""
from __future__ import annotations

import argparse
import html
import sys
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

import adapters.evaluation.config
import adapters.evaluation.prequential_run as prequential_run
from adapters.data.synth import SynthConfig, generate
from adapters.errors import MetarecError
from adapters.evaluation.baselines import Popularity
from adapters.evaluation.config import EvaluationConfig
from adapters.evaluation.prequential import PrequentialConfig
from stream.cli.commands import evaluate


def test_doctests() -> None:
    import doctest
    assert doctest.testmod(adapters.evaluation.config).failed == 0


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run") / "small.csv"
    generate(SynthConfig(n_users=30, n_items=40, events_per_user=12, n_clusters=4, seed=2)).write(path).unlink()
    return path  # without its drift sidecar: no drift-recovery section, which needs the learner models


def _fake_models(monkeypatch: pytest.MonkeyPatch, inner_steps: int) -> list[dict]:
    """θ0 and ERM stand-ins whose inner loop has ``inner_steps``; popularity stands in for the models. Returns the
    list the learner configs passed to ``build_models`` are appended to."""
    fake = SimpleNamespace(version="fake", model="mf", meta="maml",
                           adapter=SimpleNamespace(inner=SimpleNamespace(steps=inner_steps)))
    seen: list[dict] = []

    def build(stream, checkpoint, erm, online, names=()):  # noqa: ANN001, ANN202
        seen.append({"checkpoint": checkpoint, "erm": erm, "online": online})
        return [Popularity(stream)]

    monkeypatch.setattr(prequential_run, "_train", lambda *a, **k: fake)
    monkeypatch.setattr(prequential_run, "build_models", build)
    return seen


def test_the_report_records_the_command_it_is_given_not_sys_argv(csv_path: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_models(monkeypatch, inner_steps=3)
    monkeypatch.setattr(sys, "argv", ["pytest", "--this-is-not-the-command"])
    command = f"metarec evaluate --dataset {csv_path} --protocol prequential --report <rep>"
    report = prequential_run.run_prequential(EvaluationConfig(dataset=str(csv_path), report=str(tmp_path / "rep"),
                                                              progress=False, command=command))
    page = (tmp_path / "rep" / "index.html").read_text()
    assert html.escape(command) in page
    assert "--this-is-not-the-command" not in page
    assert report["protocol"] == "prequential" and "popularity" in report["models"]


@pytest.mark.parametrize(("steps", "served"), [(None, 5), (2, 2), (0, 0)])
def test_learners_adapt_with_theta0_s_inner_steps_unless_the_config_sets_them(
        csv_path: Path, monkeypatch: pytest.MonkeyPatch, steps: int | None, served: int) -> None:
    seen = _fake_models(monkeypatch, inner_steps=5)
    report = prequential_run.run_prequential(EvaluationConfig(dataset=str(csv_path), steps=steps, progress=False))
    assert seen[0]["online"].steps == served          # one learner config for metarec and erm_finetune
    assert report["online"]["steps"] == served        # the JSON shows the steps actually used


def test_bad_settings_fail_before_any_work(csv_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset was loaded before the settings were checked")

    monkeypatch.setattr("adapters.data.datasets.load_dataset", no_work)
    for bad, message in (({"steps": -1}, "steps"), ({"max_items": 1}, "max-items"), ({"history": 1.0}, "history"),
                         ({"batch_size": 0}, "batch size"), ({"item_state": "global"}, "item-state"),
                         ({"item_half_life": 0.0}, "item-half-life")):
        with pytest.raises(MetarecError, match=message):
            prequential_run.run_prequential(EvaluationConfig(dataset=str(csv_path), progress=False, **bad))


def test_batch_seconds_zero_or_none_cuts_by_batch_size_only() -> None:
    for seconds in (0, 0.0, None):
        cfg = prequential_run._protocol_config(EvaluationConfig(dataset="x", batch_seconds=seconds))
        assert cfg.batch_seconds is None
    assert prequential_run._protocol_config(EvaluationConfig(dataset="x")).batch_seconds == 1.0


def test_defaults_are_the_protocol_s() -> None:
    cfg = EvaluationConfig(dataset="x")
    protocol = PrequentialConfig()
    assert (cfg.history, cfg.batch_size, cfg.batch_seconds) == (protocol.history, protocol.batch_size,
                                                                protocol.batch_seconds)


# ------------------------------------------------------------------------------------------- metarec evaluate
def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="metarec evaluate")
    evaluate.add_arguments(parser)
    return parser.parse_args(["--dataset", "d.csv", "--protocol", "prequential", "--json", "o.json", *argv])


def test_cli_defaults_are_the_evaluation_config_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["metarec", "evaluate", "--dataset", "d.csv"])
    cfg = evaluate.evaluation_config(_parse())
    assert cfg.command == "metarec evaluate --dataset d.csv"
    assert replace(cfg, command="") == EvaluationConfig(dataset="d.csv")
    assert cfg.steps is None                          # θ0's inner steps unless --steps


def test_cli_flags_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["metarec", "evaluate"])
    cfg = evaluate.evaluation_config(_parse("--model", "mf", "--meta", "fomaml", "--history", "0.3", "--steps", "2",
                                            "--epochs", "1", "--max-items", "99", "--seed", "4", "--batch-size", "8",
                                            "--batch-seconds", "0", "--checkpoint", "ck", "--report", "rep",
                                            "--data-dir", "dd", "--no-progress", "--retrain-every", "50",
                                            "--retrain-window", "70", "--item-state", "shared",
                                            "--item-half-life", "3600", "--task-learner", "bayes",
                                            "--explore", "ucb", "--explore-scale", "0.5",
                                            "--models", "metarec,popularity", "--persistence", "0.3", "--workers", "3"))
    assert cfg == EvaluationConfig(dataset="d.csv", model="mf", meta="fomaml", history=0.3, steps=2, epochs=1,
                                   max_items=99, seed=4, batch_size=8, batch_seconds=None, checkpoint="ck",
                                   report="rep", data_dir="dd", progress=False, command="metarec evaluate",
                                   retrain_every=50, retrain_window=70, item_state="shared", item_half_life=3600.0,
                                   task_learner="bayes", explore="ucb", explore_scale=0.5,
                                   models=("metarec", "popularity"), persistence=0.3, workers=3)
    # every setting has its flag (a new field needs one, and a line here)
    covered = {f.name for f in fields(EvaluationConfig)}
    assert covered == {"dataset", "model", "meta", "history", "checkpoint", "report", "epochs", "steps", "max_items",
                       "seed", "batch_size", "batch_seconds", "data_dir", "progress", "command", "retrain_every",
                       "retrain_window", "item_state", "item_half_life", "task_learner", "explore", "explore_scale",
                       "workers",
                       "models", "persistence"}


def test_the_library_never_reads_the_command_line() -> None:
    root = Path(adapters.evaluation.config.__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root.parent)) for p in root.rglob("*.py")
                 if "sys.argv" in p.read_text(encoding="utf-8") or "import argparse" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_item_state_shared_gives_the_learners_the_group_s_round_trip(csv_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--item-state shared (now the default) delays the in-process owner by one micro-batch, local merges at once;
    the popularity half-life is θ0's unless --item-half-life gives it in seconds."""
    seen = _fake_models(monkeypatch, inner_steps=3)
    shared = prequential_run.run_prequential(EvaluationConfig(dataset=str(csv_path), progress=False))
    local = prequential_run.run_prequential(EvaluationConfig(dataset=str(csv_path), progress=False,
                                                             item_state="local", item_half_life=600.0))
    assert (shared["item_state"], local["item_state"]) == ("shared", "local")  # the JSON says which mode it measured
    assert EvaluationConfig(dataset="x").item_state == "shared"
    assert (seen[0]["online"].owner_delay, seen[0]["online"].item_half_life) == (1, None)
    assert (seen[1]["online"].owner_delay, seen[1]["online"].item_half_life) == (0, 600.0)


def test_a_shared_learner_model_learns_its_items_through_the_in_process_owner(csv_path: Path) -> None:
    from collections import Counter

    from adapters.data.datasets import load_dataset
    from adapters.evaluation.baselines import LearnerModel
    from adapters.evaluation.prequential import EventStream
    from adapters.meta.training import TrainConfig, train
    from adapters.online.config import OnlineConfig
    from adapters.online.learner import OnlineLearner

    ds = load_dataset(str(csv_path))
    ck = train(ds, TrainConfig(model="seq", meta="fomaml", epochs=1, pretrain_epochs=1, seed=0,
                               model_config={"dim": 8, "rating_dim": 4}))
    stream = EventStream.from_dataset(ds, history=0.5)
    model = LearnerModel(stream, OnlineLearner(ck, OnlineConfig(owner_delay=1)), "metarec")
    learner = model.learner
    model.learn(0, 100)                                       # one micro-batch: still on its way to the owner
    assert len(learner.owner.queue) == 1 and not learner.items.total.any()
    model.learn(100, 101)                                     # the next one brings it back
    counts = Counter(e.item_id for e in model._events[:100])
    assert len(counts) > 5
    for item, n in counts.items():
        assert learner.item_state(item)["events"] == n, item
    assert learner.items.total.sum() == 100


def test_models_restricts_the_report_and_skips_the_erm_training(csv_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    trained: list[str] = []
    fake = SimpleNamespace(version="fake", model="mf", meta="maml",
                           adapter=SimpleNamespace(inner=SimpleNamespace(steps=1)))
    monkeypatch.setattr(prequential_run, "_train", lambda ds, cfg, model, meta, progress: trained.append(meta) or fake)
    report = prequential_run.run_prequential(EvaluationConfig(dataset=str(csv_path), progress=False,
                                                              models=("popularity", "cooccurrence")))
    assert list(report["models"]) == ["popularity", "cooccurrence"]
    assert trained == ["maml"] and report["checkpoint"]["erm_version"] is None
    with pytest.raises(MetarecError, match="unknown model nope"):
        prequential_run.run_prequential(EvaluationConfig(dataset=str(csv_path), progress=False, models=("nope",)))

"""The HTML report and the whole `metarec evaluate --protocol prequential` path on a small synthetic stream."""
from __future__ import annotations

import argparse
import doctest
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import adapters.evaluation.report
from adapters.evaluation.baselines import Popularity
from adapters.errors import MetarecError
from adapters.evaluation.prequential import EventStream, ModelTrace, PrequentialConfig, run_protocol
from adapters.evaluation.report import write_report


def test_doctests() -> None:
    assert doctest.testmod(adapters.evaluation.report).failed == 0


def _result() -> tuple:
    rng = np.random.default_rng(0)
    n = 3000
    s = EventStream.from_arrays(users=rng.integers(0, 50, n).astype(str), items=(rng.zipf(1.3, n) % 90).astype(str),
                                ratings=rng.integers(1, 6, n), history=0.5, name="toy")
    res = run_protocol(s, [Popularity(s), Popularity(s, half_life=100)], PrequentialConfig(), progress=False)
    # two stand-ins named like the learner models, so the adaptation-gain plot is drawn
    for name, src in (("metarec", "popularity_decayed"), ("no_adaptation", "popularity")):
        res.traces[name] = ModelTrace(name, predictions=res.traces[src].predictions, ranks=res.traces[src].ranks)
    return res


def test_report_files_and_content(tmp_path: Path) -> None:
    res = _result()
    summary = res.summary()
    out = tmp_path / "rep"
    files = write_report(out, res, summary, {"dataset": "toy", "history": 0.5}, "metarec evaluate --dataset toy")
    names = sorted(p.name for p in files)
    assert names == ["adaptation_gain.png", "hr_rolling.png", "index.html", "rmse_rolling.png"]
    for p in files:
        assert p.stat().st_size > 1000
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert "metarec evaluate --dataset toy" in page
    for name in summary:
        assert f"<b>{name}</b>" in page
    assert f"{summary['popularity']['hr@10']:.4f}" in page
    assert f"{summary['popularity']['coverage@10']:.4f}" in page       # beyond-accuracy columns
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == ["adaptation_gain.png", "hr_rolling.png", "rmse_rolling.png"]   # relative paths
    assert all((out / i).exists() for i in images)


def test_report_with_drift_section(tmp_path: Path) -> None:
    res = _result()
    drift = {"drifting_users": 3, "config": {"threshold": 0.9}, "curve_offsets": [-1, 0, 1],
             "models": {"metarec": {"measured_users": 3, "recovered_share": 1.0, "median_events": 2.0,
                                    "mean_events": 2.0, "hr@10_before": 0.5, "hr@10_first10_after": 0.2,
                                    "curve": [0.5, None, 0.4]}}}
    files = write_report(tmp_path, res, res.summary(), {}, "x", drift=drift)
    assert "drift_recovery.png" in {p.name for p in files}
    assert "Drift recovery" in (tmp_path / "index.html").read_text()


def test_unwritable_report_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MetarecError):
        write_report(blocker / "sub", _result(), {}, {}, "x")


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adapters.data.synth import SynthConfig, generate
    path = tmp_path_factory.mktemp("synth") / "drift.csv"
    generate(SynthConfig(n_users=60, n_items=60, events_per_user=24, n_clusters=4, seed=4)).write(path)
    return path


def _evaluate(argv: list[str]) -> int:
    from stream.cli.commands import evaluate
    parser = argparse.ArgumentParser(prog="metarec evaluate")
    evaluate.add_arguments(parser)
    return evaluate.run(parser.parse_args(argv))


def test_evaluate_prequential_end_to_end(synthetic_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    out, rep = tmp_path / "out.json", tmp_path / "report"
    argv = ["--dataset", str(synthetic_csv), "--protocol", "prequential", "--history", "0.5", "--epochs", "1",
            "--json", str(out), "--report", str(rep), "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["metarec", "evaluate", *argv])
    assert _evaluate(argv) == 0
    data = json.loads(out.read_text())
    assert data["protocol"] == "prequential" and data["dataset"] == str(synthetic_csv)
    assert data["events"] == 60 * 24
    assert set(data["models"]) == {"metarec", "no_adaptation", "popularity", "popularity_decayed", "river_biasedmf",
                                   "erm_finetune", "cooccurrence"}
    for name, fig in data["models"].items():
        ranking = {"hr@10", "ndcg@10", "coverage@10", "novelty@10"}   # a CSV has no genres: no diversity@10
        expected = ranking if name == "cooccurrence" else ranking | {"rmse", "mae"}   # no rating model
        assert expected <= set(fig) <= expected | {"new_item_hr@10"}, name
        assert all(np.isfinite(v) for v in fig.values())
    assert set(data["drift"]["models"]) >= {"metarec", "no_adaptation", "popularity", "cooccurrence"}
    groups = data["groups"]   # a CSV has no demographics: activity groups only, every ranking model in each
    assert groups and all(g.startswith("activity:") for g in groups) and set(data["group_bounds"]) == set(groups)
    assert all(set(per_model) == set(data["models"]) for per_model in groups.values())
    assert sum(per_model["metarec"]["positive_events"] for per_model in groups.values()) == data["positive_events"]
    page = (rep / "index.html").read_text()
    assert "<h2>Groups</h2>" in page
    assert "<b>cooccurrence</b>" in page and "<th>coverage@10</th>" in page and "novelty@10 = mean" in page
    assert "drift_recovery.png" in page and (rep / "drift_recovery.png").exists()
    assert "--protocol prequential" in page


def test_checkpoint_trained_on_another_part_is_refused(synthetic_csv: Path, tmp_path: Path) -> None:
    from adapters.data.datasets import load_dataset
    from adapters.meta.training import TrainConfig, train
    ck = train(load_dataset(str(synthetic_csv)), TrainConfig(epochs=0, pretrain_epochs=0, history=0.8,
                                                              model_config={"dim": 4, "rating_dim": 2}))
    ck.save(tmp_path / "ck")
    with pytest.raises(MetarecError, match="not trained on the first 0.5"):
        _evaluate(["--dataset", str(synthetic_csv), "--protocol", "prequential", "--checkpoint", str(tmp_path / "ck"),
                   "--json", str(tmp_path / "x.json"), "--no-progress"])

"""Meta-training: task sampling, history fraction, the `metarec train` command."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from synthetic_data import synthetic_dataset

from adapters.meta.checkpoint import Checkpoint, training_fingerprint
from adapters.errors import MetarecError
from adapters.meta.training import TrainConfig, UserEvents, sample_tasks, train


def test_time_split_tasks_respect_time_order_and_window():
    ue = UserEvents(3, np.arange(1, 51), np.full(50, 4.0, dtype=np.float32))
    tasks = sample_tasks([ue], "time", np.random.default_rng(0), window=8, query_size=5)
    assert len(tasks) >= 9
    for user, si, _, qi, _ in tasks:
        assert user == 3 and 1 <= len(si) <= 8 and 1 <= len(qi) <= 5
        assert si.max() < qi.min()  # support strictly before query
        assert qi[0] == si[-1] + 1  # query starts right after the cut
    assert {int(q) for t in tasks for q in t[3]} >= set(range(10, 51))  # every later event is a query once


def test_random_split_tasks_partition_the_events():
    ue = UserEvents(1, np.arange(1, 31), np.full(30, 3.0, dtype=np.float32))
    (task,) = sample_tasks([ue], "random", np.random.default_rng(0), query_size=10)
    assert len(task[3]) == 10 and len(task[1]) == 20
    assert sorted(np.concatenate([task[1], task[3]]).tolist()) == list(range(1, 31))


def test_history_fraction_limits_training_events():
    ds = synthetic_dataset()
    ck = train(ds, TrainConfig(model="mf", meta="fomaml", epochs=1, history=0.25, pretrain_epochs=1,
                               model_config={"dim": 8, "rating_dim": 4}))
    assert ck.metrics["train_events"] == len(ds) // 4
    assert ck.fingerprint == training_fingerprint(ds.fingerprint, 0.25)
    with pytest.raises(MetarecError):
        train(ds, TrainConfig(history=0.0))


def test_meta_training_lowers_query_loss():
    ds = synthetic_dataset()
    small = {"dim": 8, "rating_dim": 4}
    ck = train(ds, TrainConfig(model="mf", meta="maml", epochs=6, pretrain_epochs=0, model_config=small))
    losses = [e["meta_loss"] for e in ck.metrics["epochs"]]
    assert losses[-1] < losses[0]


def _args(tmp_path, **kw):
    base = dict(dataset=None, model="mf", meta="reptile", out=str(tmp_path / "ck"), epochs=1, seed=0, history=1.0,
                steps=2, inner_lr=None, prox=0.0, batch_users=16, split="time", window=32, query_size=8,
                outer_lr=3e-3, pretrain_epochs=1, dim=8, threads=None, data_dir=None, no_progress=True,
                coldstart_part=False)
    base.update(kw)
    from stream.cli.commands import train as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args(["--out", base["out"]])  # every flag at its default, then the values above
    for key, value in base.items():
        setattr(args, key, value)
    return args


def test_train_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    from stream.cli.commands import train as cmd
    csv = tmp_path / "events.csv"
    synthetic_dataset().to_csv(csv)
    assert cmd.run(_args(tmp_path, dataset=str(csv))) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ck = Checkpoint.load(tmp_path / "ck")
    assert out["version"] == ck.version and ck.meta == "reptile" and ck.model == "mf"
    assert ck.config["training"]["steps"] == 2


def test_train_command_rejects_bad_arguments(tmp_path):
    from stream.cli.commands import train as cmd
    with pytest.raises(MetarecError, match="--history"):
        cmd.run(_args(tmp_path, dataset="x.csv", history=1.5))
    with pytest.raises(MetarecError, match="--batch-users"):
        cmd.run(_args(tmp_path, dataset="x.csv", batch_users=0))


def test_train_command_defaults_are_train_config_s():
    from dataclasses import fields

    from adapters.meta.config import DEFAULT_META
    from stream.cli.commands import train as cmd
    parser = argparse.ArgumentParser(prog="metarec train")
    cmd.add_arguments(parser)
    args = vars(parser.parse_args(["--dataset", "d.csv", "--out", "ck"]))
    defaults = TrainConfig()
    flagged = {f.name for f in fields(TrainConfig) if f.name in args}
    assert flagged == {"model", "meta", "epochs", "seed", "history", "steps", "inner_lr", "inner_lr_rating", "prox",
                       "rating_solver", "ridge_lambda", "batch_users", "split", "window", "query_size", "outer_lr",
                       "pretrain_epochs", "popularity_weight", "item_half_life", "bias_lr", "task_learner"}
    for name in flagged:
        expected = DEFAULT_META if name == "meta" else getattr(defaults, name)   # the commands train with maml
        assert args[name] == expected, name
    text = " ".join(parser.format_help().split())
    assert f"inner-loop gradient steps K (default {defaults.steps};" in text and "(default: mf 0.2, melu 0)" in text


def test_inner_steps_are_stored_in_the_checkpoint(tmp_path):
    ds = synthetic_dataset(n_users=12, n_items=40)
    ck = train(ds, TrainConfig(model="mf", epochs=0, pretrain_epochs=0, steps=1, model_config={"dim": 4, "rating_dim": 2}))
    ck.save(tmp_path / "ck")
    assert ck.adapter.inner.steps == 1 and Checkpoint.load(tmp_path / "ck").adapter.inner.steps == 1
    assert train(ds, TrainConfig(model="mf", epochs=0, pretrain_epochs=0,
                                 model_config={"dim": 4, "rating_dim": 2})).adapter.inner.steps == 3


def test_config_doctests():
    import doctest

    import adapters.meta.config
    assert doctest.testmod(adapters.meta.config).failed == 0

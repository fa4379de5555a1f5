"""The command-line conventions every sub-command shares: METAREC_* env defaults, one-line errors, exit 2."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from stream.cli.main import _OneLineParser, apply_env_defaults, env_var_for


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="t")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--store", choices=["rocksdb", "memory"], default="rocksdb")
    p.add_argument("--quiet", action="store_true")
    return p


def test_env_var_names_follow_the_flag() -> None:
    actions = {a.dest: a for a in _parser()._actions}
    assert env_var_for(actions["batch_size"]) == "METAREC_BATCH_SIZE"
    assert env_var_for(actions["help"]) is None


def test_env_supplies_defaults_and_the_flag_wins() -> None:
    p = _parser()
    apply_env_defaults(p, {"METAREC_BOOTSTRAP": "h:1", "METAREC_BATCH_SIZE": "64", "METAREC_QUIET": "true"})
    args = p.parse_args([])
    assert (args.bootstrap, args.batch_size, args.quiet) == ("h:1", 64, True)
    args = p.parse_args(["--bootstrap", "x:2", "--batch-size", "8"])
    assert (args.bootstrap, args.batch_size) == ("x:2", 8)


@pytest.mark.parametrize("env", [{"METAREC_BATCH_SIZE": "many"}, {"METAREC_STORE": "redis"}])
def test_bad_env_value_is_one_line_and_exit_2(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    p = _parser()
    with pytest.raises(SystemExit) as exc:
        apply_env_defaults(p, env)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and next(iter(env)) in err


def test_missing_required_flag_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args([])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def _metarec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_help_lists_every_command() -> None:
    from stream.cli.commands import COMMANDS

    out = _metarec("--help")
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("argv", [["nosuchcommand"], ["train", "--model", "gpt"], ["worker", "--batch-size", "x"],
                                  ["worker", "--bootstrap", "127.0.0.1:1", "--checkpoint", "ck", "--task-learner",
                                   "gradient", "--explore", "thompson"],
                                  ["evaluate", "--dataset", "ml-100k", "--protocol", "prequential", "--json", "x.json",
                                   "--explore", "ucb"],
                                  ["evaluate", "--dataset", "ml-100k", "--protocol", "prequential", "--json", "x.json",
                                   "--task-learner", "bayes", "--persistence", "1.5"],
                                  ["train", "--dataset", "ml-100k", "--out", "ck", "--task-learner", "newton"]])
def test_bad_arguments_exit_2_with_one_line(argv: list[str]) -> None:
    out = _metarec(*argv)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr


METASGD_BAYES = ("metarec {command}: error: metasgd learns per-parameter inner rates; the bayes task learner takes one "
                 "Newton step and has none to learn: use maml")
MELU_BAYES = ("metarec {command}: error: model melu has no closed-form rating block: the bayes task learner needs mf or "
              "seq")


@pytest.mark.parametrize("command,argv", [
    ("train", ["--dataset", "ml-100k", "--out", "{tmp}/ck"]),
    ("evaluate", ["--dataset", "ml-100k", "--protocol", "prequential", "--json", "{tmp}/x.json"]),
])
@pytest.mark.parametrize("pair,message", [(["--meta", "metasgd"], METASGD_BAYES), (["--model", "melu"], MELU_BAYES)])
def test_an_unsupported_meta_learner_and_task_learner_pair_is_refused(command, argv, pair, message, tmp_path) -> None:
    """``--task-learner bayes`` takes one Newton step: metasgd has no rates to learn there (it used to train as maml
    without a word), melu no closed-form rating block. Refused at once (before the data is read), exit 2, one line."""
    out = _metarec(command, *[a.format(tmp=tmp_path) for a in argv], *pair, "--task-learner", "bayes")
    assert out.returncode == 2, out.stderr
    assert out.stderr == message.format(command=command) + "\n"
    assert not (tmp_path / "ck").exists() and not (tmp_path / "x.json").exists()

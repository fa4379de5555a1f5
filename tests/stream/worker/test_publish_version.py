"""Publishing a model version: written completely, then named by LATEST; readers never see a partial one."""
from __future__ import annotations

import pytest
from worker_support import make_checkpoint

from adapters.errors import MetarecError
from adapters.meta.checkpoint import Checkpoint
from stream.worker.versions import CheckpointWatcher, publish_version, resolve_checkpoint


def test_publish_writes_the_version_then_latest(tmp_path):
    make_checkpoint(tmp_path / "a", ["1", "2", "3"], seed=1)
    make_checkpoint(tmp_path / "b", ["1", "2", "3", "4"], seed=2)
    a, b = Checkpoint.load(tmp_path / "a"), Checkpoint.load(tmp_path / "b")
    models = tmp_path / "models"
    first = publish_version(models, a)
    assert resolve_checkpoint(models) == first and first.name == a.version
    watcher = CheckpointWatcher(models, Checkpoint.load)
    assert watcher.load_initial().version == a.version
    second = publish_version(models, b, name="v2")
    assert (models / "LATEST").read_text().strip() == "v2" and resolve_checkpoint(models) == second
    assert watcher.poll().version == b.version
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    with pytest.raises(MetarecError, match="exists already"):
        publish_version(models, b, name="v2")


def test_a_version_being_written_is_never_chosen(tmp_path):
    make_checkpoint(tmp_path / "models" / ".incoming-x", ["1"], seed=1)  # what publish_version writes first
    with pytest.raises(MetarecError, match="neither a checkpoint directory"):
        resolve_checkpoint(tmp_path / "models")

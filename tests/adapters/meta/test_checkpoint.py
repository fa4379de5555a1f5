"""Checkpoints: safetensors + JSON round trip, validation, refusal of anything else."""
from __future__ import annotations

import json

import pytest
import torch
from synthetic_data import synthetic_dataset

from adapters.meta.checkpoint import Checkpoint, training_fingerprint
from adapters.errors import MetarecError
from adapters.meta.training import TrainConfig, train


@pytest.fixture(scope="module", params=["mf", "melu"])
def ck(request):
    cfg = TrainConfig(model=request.param, meta="fomaml", epochs=1, batch_users=16, pretrain_epochs=1,
                      history=0.5, model_config={"dim": 8, "rating_dim": 4} if request.param == "mf"
                      else {"emb_dim": 4, "hidden": 8, "n_negatives": 8})
    return train(synthetic_dataset(), cfg)


def test_round_trip(ck, tmp_path):
    ck.save(tmp_path / "c")
    back = Checkpoint.load(tmp_path / "c")
    assert back.version == ck.version and back.model == ck.model and back.meta == "fomaml"
    assert back.item_ids == ck.item_ids and back.item_ids[0] == "<unk>"
    assert back.item_index == {i: r for r, i in enumerate(ck.item_ids) if r}
    assert back.user_index == ck.user_index and back.item_titles == ck.item_titles
    assert back.fingerprint == training_fingerprint("f" * 64, 0.5, "all")
    assert back.config["history"] == 0.5 and back.config["rating_range"] == [1.0, 5.0]
    for (k, v), (k2, v2) in zip(ck.adapter.state_dict().items(), back.adapter.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    users = torch.tensor([0, 1, 2])
    s = back.adapter.init_states(users)
    assert torch.equal(back.adapter.score(s, users), ck.adapter.score(ck.adapter.init_states(users), users))
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["epochs"]
    assert back.version.startswith(f"{ck.model}-fomaml-") and len(back.version.split("-")[-1]) == 8


def test_version_names_the_weights(ck):
    other = Checkpoint.from_adapter(ck.adapter, ck.item_ids, "fomaml")
    assert other.version.split("-")[-1] == ck.version.split("-")[-1]


def test_missing_and_corrupt_directories_are_user_errors(ck, tmp_path):
    with pytest.raises(MetarecError, match="does not exist"):
        Checkpoint.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetarecError, match="missing"):
        Checkpoint.load(tmp_path / "empty")
    d = ck.save(tmp_path / "bad")
    (d / "weights.safetensors").write_bytes(b"\x80\x04\x95 this is a pickle, not safetensors")
    with pytest.raises(MetarecError, match="safetensors"):
        Checkpoint.load(d)
    d = ck.save(tmp_path / "badjson")
    (d / "config.json").write_text("{not json")
    with pytest.raises(MetarecError, match="JSON"):
        Checkpoint.load(d)


def test_weights_must_match_configuration(ck, tmp_path):
    d = ck.save(tmp_path / "c")
    config = json.loads((d / "config.json").read_text())
    config["shapes"]["n_items"] += 3
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(MetarecError, match="do not match"):
        Checkpoint.load(d)


def test_torch_pickle_is_refused(ck, tmp_path):
    d = ck.save(tmp_path / "c")
    torch.save(ck.adapter.state_dict(), d / "weights.safetensors")
    with pytest.raises(MetarecError):
        Checkpoint.load(d)

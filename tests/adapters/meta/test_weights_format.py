"""Weights files are told apart by the safetensors structure, not by their first byte.

A safetensors file starts with its JSON header's length (u64, little-endian, a multiple of 8); one length in 32 has
the low byte 0x80, which is also how a pickle starts. Such files must load; real pickles, ``torch.save`` zips and
gzip files must be refused with the message that names them.
"""
from __future__ import annotations

import gzip
import pickle

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save
from synthetic_data import synthetic_dataset

from adapters.errors import MetarecError
from adapters.meta.checkpoint import Checkpoint, has_safetensors_structure, load_weights
from adapters.meta.training import TrainConfig, train

TINY = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}


def header_length(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


def safetensors_bytes(tensors: dict[str, torch.Tensor], length: int) -> bytes:
    """A safetensors file of ``tensors`` whose JSON header is exactly ``length`` bytes (metadata padded)."""
    natural = header_length(save(tensors, metadata={"pad": ""}))
    if length < natural:
        raise ValueError(f"header of these tensors is at least {natural} bytes")
    for pad in range(max(0, length - natural - 8), length - natural + 9):
        data = save(tensors, metadata={"pad": "x" * pad})
        if header_length(data) == length:
            return data
    raise ValueError(f"no padding gives a header of {length} bytes (not a multiple of 8?)")


@pytest.mark.parametrize("length", [128, 384, 1152, 35616])
def test_safetensors_of_any_header_length_loads(tmp_path, length):
    data = safetensors_bytes(TINY, length)
    assert data[:8] == length.to_bytes(8, "little")  # 128, 384, 1152: first byte 0x80, a pickle's magic
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    assert torch.equal(load_weights(path)["w"], TINY["w"])


@pytest.fixture(scope="module")
def checkpoint():
    cfg = TrainConfig(model="mf", meta="fomaml", epochs=1, batch_users=16, pretrain_epochs=1, history=0.5,
                      model_config={"dim": 8, "rating_dim": 4})
    return train(synthetic_dataset(), cfg)


@pytest.mark.parametrize("length", [1152, 35616])
def test_checkpoint_with_a_pickle_like_header_length_loads(checkpoint, tmp_path, length):
    """The whole loader, on a real checkpoint whose weights file starts with 0x80 (the bug as a user met it)."""
    d = checkpoint.save(tmp_path / "c")
    weights = checkpoint.weights()  # the model's tensors and the rates it adapts with
    (d / "weights.safetensors").write_bytes(safetensors_bytes(weights, length))
    assert header_length((d / "weights.safetensors").read_bytes()) == length
    back = Checkpoint.load(d)
    for k, v in checkpoint.adapter.state_dict().items():
        assert torch.equal(back.adapter.state_dict()[k], v)


def _pickles():
    obj = {"w": [1.0, 2.0, 3.0]}
    return [(f"pickle-protocol-{p}", pickle.dumps(obj, protocol=p)) for p in range(2, 6)]


@pytest.mark.parametrize("name,data", _pickles())
def test_pickles_are_refused_by_name(tmp_path, name, data):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    with pytest.raises(MetarecError, match="pickle/torch.save file, not safetensors"):
        load_weights(path)


def test_torch_save_zip_and_gzip_are_refused_by_name(tmp_path):
    path = tmp_path / "weights.safetensors"
    torch.save(TINY, path)
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    with pytest.raises(MetarecError, match="pickle/torch.save file"):
        load_weights(path)
    path.write_bytes(gzip.compress(pickle.dumps(TINY, protocol=4)))
    with pytest.raises(MetarecError, match="pickle/torch.save file"):
        load_weights(path)


def test_other_garbage_is_a_corrupt_safetensors_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    for data in (b"", b"{}", (10**9).to_bytes(8, "little") + b"{", (16).to_bytes(8, "little") + b"[" + b" " * 15):
        path.write_bytes(data)
        with pytest.raises(MetarecError, match="not a valid safetensors file"):
            load_weights(path)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=4, max_value=5000).map(lambda k: 8 * k))
@example(128)
@example(384)
@example(0x4b50)
def test_every_header_length_loads(length):
    """Property: whatever the header length, a safetensors file loads."""
    data = safetensors_bytes(TINY, max(length, header_length(save(TINY, metadata={"pad": ""}))))
    assert has_safetensors_structure(data[:9], len(data))
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        path.write_bytes(data)
        assert torch.equal(load_weights(path)["w"], TINY["w"])


@given(st.integers(min_value=2, max_value=5), st.binary(max_size=64))
def test_pickle_structure_is_never_taken_for_safetensors(protocol, payload):
    data = pickle.dumps(payload, protocol=protocol)
    assert not has_safetensors_structure(data[:9], len(data))

import pickle

import pytest
import torch

from vaekit.storage import (atomic_write_bytes, flatten_state, load_tensors, save_tensors,
                               unflatten_state)
from vaekit.errors import CheckpointError


def test_round_trip_of_nested_optimizer_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {}
    skeleton = flatten_state({"optimizer": opt.state_dict()}, "s", tensors)
    save_tensors(tmp_path / "c.safetensors", tensors, {"state": skeleton, "epoch": 3})
    loaded, meta = load_tensors(tmp_path / "c.safetensors")
    restored = unflatten_state(meta["state"], loaded)["optimizer"]
    opt2 = torch.optim.Adam(model.parameters(), lr=0.5)
    opt2.load_state_dict(restored)
    assert opt2.param_groups[0]["lr"] == 0.01 and meta["epoch"] == 3
    for k, v in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(opt2.state_dict()["state"][0][k], v)


def test_corruption_is_detected(tmp_path):
    path = tmp_path / "c.safetensors"
    save_tensors(path, {"w": torch.arange(100.0)}, {"a": 1})
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the tensor payload
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_tensors(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_tensors(path)


def test_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "c.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_tensors(path)
    assert not marker.exists()


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_tensors(path, {"w": torch.ones(1)}, {"format_version": 99})
    with pytest.raises(CheckpointError, match="newer vaekit"):
        load_tensors(path)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_bytes(tmp_path / "f", b"one")
    atomic_write_bytes(tmp_path / "f", b"two")
    assert (tmp_path / "f").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]

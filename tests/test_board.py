"""TensorBoard logging: scalars and images when tensorboard is installed (read back from the
event files), one warning and no effect when it is not."""

import sys

import pytest
import torch

from vaekit.view.board import TENSORBOARD_DIR, EpochBoard, scalar_tag
from vaekit.config import ModelConfig
from vaekit.families import build_model


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(hidden=(8,), latent_dim=2, likelihood="bernoulli"), (1, 8, 8))


def test_scalar_tags_group_by_split():
    assert scalar_tag("train_elbo") == "train/elbo"
    assert scalar_tag("val_kl") == "val/kl"
    assert scalar_tag("images_per_second") == "run/images_per_second"


def test_disabled_board_writes_nothing(tmp_path):
    board = EpochBoard(tmp_path, enabled=False)
    board.log_epoch({"epoch": 1, "val_elbo": -1.0}, tiny_model(), torch.rand(16, 1, 8, 8), True)
    board.close()
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_missing_tensorboard_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    messages = []
    board = EpochBoard(tmp_path, enabled=True, log=messages.append)
    board.log_epoch({"epoch": 1, "val_elbo": -1.0}, tiny_model(), torch.rand(16, 1, 8, 8), True)
    board.close()
    assert len(messages) == 1 and "pip install 'vaekit[tensorboard]'" in messages[0]
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_scalars_and_images_are_written_per_epoch(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, x = tiny_model(), torch.rand(40, 1, 8, 8)
    board = EpochBoard(tmp_path, enabled=True)
    for epoch, elbo in ((1, -50.0), (2, -45.5)):
        board.log_epoch({"epoch": epoch, "train_elbo": elbo - 1, "val_elbo": elbo, "beta": 1.0,
                         "skipped_steps": 0}, model, x, True)
    board.close()
    events = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("val/elbo")] == [(1, -50.0), (2, -45.5)]
    assert {"train/elbo", "val/elbo", "run/beta", "run/skipped_steps"} <= set(events.Tags()["scalars"])
    assert set(events.Tags()["images"]) == {"samples", "reconstructions"}
    samples = events.Images("samples")[-1]
    assert (samples.width, samples.height) == (8 * 10 + 2, 4 * 10 + 2)  # 32 images, 8 per row


def test_train_flags_map_to_the_config():
    from vaekit.cli import build_parser
    from vaekit.cli_options import overrides as _overrides

    args = build_parser().parse_args(["train", "--tensorboard", "--no-report"])
    assert _overrides(args) == {"train": {"report": False, "tensorboard": True}}

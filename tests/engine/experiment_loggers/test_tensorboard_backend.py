"""TensorBoard as an experiment logger: settings, pictures, profile and best metrics next to MetricsLogger's
scalars, in the one ``tensorboard/`` folder."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dfine.engine.experiment_loggers.base import StartInfo
from dfine.engine.experiment_loggers.tensorboard_backend import TensorBoardLogger
from dfine.engine.logger import MetricsLogger


def test_one_folder_holds_everything(tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "train_batch0.jpg"
    Image.new("RGB", (8, 6), (0, 255, 0)).save(picture)
    with MetricsLogger(tmp_path) as metrics:
        board = TensorBoardLogger(StartInfo(output_dir=tmp_path, run_name="run"))
        board.log_params({"hparams": {"lr": 0.00025}})
        board.log_image("train_batch0", picture, step=1)
        metrics.log_epoch(0, train={"loss": 2.0})
        board.log_metrics({"profile/backward": 1.5}, step=1)
        board.log_summary({"best/AP": 0.25}, step=1)
        board.finish("finished")
    assert board.resume_info() == {}
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "profile/backward"} <= set(tags["scalars"])
    assert tags["images"] == ["images/train_batch0"]
    image = events.Images("images/train_batch0")[0]
    assert (image.width, image.height, image.step) == (8, 6, 1)
    assert {"settings/text_summary", "best/text_summary"} <= set(tags["tensors"])
    settings = events.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"lr": 0.00025' in settings

"""``--device``: every command resolves it through :func:`dfine.utils.device.resolve_device`, so a typo is a
one-line error with exit status 2, never torch's RuntimeError traceback."""

from __future__ import annotations

import pytest
import torch

from dfine.cli.main import main
from dfine.errors import DFineError
from dfine.utils.device import resolve_device


@pytest.mark.parametrize("text", ["gpu", "GPU0", "meta", "cuda:-1", ""])
def test_unknown_device_is_a_user_error(text) -> None:
    with pytest.raises(DFineError, match=r"unknown device .*: use auto, cpu, cuda or cuda:N") as info:
        resolve_device(text)
    assert "\n" not in str(info.value)


def test_known_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")  # as typed in a config file or a shell variable
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_missing_cuda_device_is_a_user_error() -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # worded for Python and the command line alike (the message once said "--device" to Python callers too)
    with pytest.raises(DFineError, match=f"^device 'cuda:{count}' was asked for, but "):
        resolve_device(f"cuda:{count}")


def test_training_resolves_devices_the_same_way() -> None:
    from dfine.engine.api import training_device

    with pytest.raises(DFineError, match="unknown device 'gpu'"):
        training_device("gpu", 0)


@pytest.mark.parametrize("command", [
    ["predict", "nowhere.jpg", "--model", "dfine-n-coco"],
    ["benchmark", "--model", "dfine-n-coco", "--iters", "1", "--warmup", "0", "--image-size", "256"],
])
def test_cli_device_typo_is_one_line(command, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # predict would otherwise create runs/predict in the working folder
    assert main([*command, "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dfine {command[0]}: error: unknown device 'gpu': use auto, cpu, cuda or cuda:N"

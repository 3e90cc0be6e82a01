"""`dfine benchmark` options that choose where an exported model runs."""

from __future__ import annotations

import pytest
from test_predict_cli import _error_line, _tiny_onnx

from dfine.cli.main import main


def _benchmark(model, *extra) -> int:
    return main(["benchmark", "--model", str(model), "--iters", "1", "--warmup", "0", *extra])


def test_onnxruntime_backend_follows_device(tmp_path, capsys, monkeypatch) -> None:
    # --device used to be ignored for ONNX Runtime, which ran wherever it could while "device: cpu" was printed
    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    import onnxruntime as ort

    assert _benchmark(model, "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "ONNX Runtime CPUExecutionProvider" in out and "device:      cpu" in out
    assert _benchmark(model, "--device", "bogus") == 2
    assert "unknown device 'bogus'" in _error_line(capsys)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert _benchmark(model, "--device", "cuda") == 2
    assert "CUDAExecutionProvider" in _error_line(capsys)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_onnxruntime_on_cuda_is_reported_as_such(device, tmp_path, capsys, monkeypatch) -> None:
    """With a CUDA provider, the device line names the GPU the session runs on (a stand-in session here)."""
    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    import onnxruntime as ort

    from dfine.runtime import onnx as runtime

    asked = []
    create = runtime.create_session

    class CudaSession:
        def __init__(self, path, providers, threads) -> None:
            asked.append(providers)
            self.session = create(path, ["CPUExecutionProvider"], threads)

        def __getattr__(self, name):
            return getattr(self.session, name)

        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def get_provider_options(self) -> dict:
            return {"CUDAExecutionProvider": {"device_id": asked[-1][0][1]["device_id"]}}

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "create_session", CudaSession)
    assert _benchmark(model, "--device", device) == 0
    index = device.partition(":")[2] or "0"
    assert asked == [[("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]]
    assert f"device:      cuda:{index}, input" in capsys.readouterr().out


def test_a_segmentation_model_is_timed_with_its_masks(tmp_path, capsys, monkeypatch) -> None:
    """Loaded as what it is (not as a detector without its mask branch), in the eager and the bf16 fast forms; its
    GFLOPs include the mask branch. TensorRT, which has no masks export, is refused in one line."""
    import dataclasses

    from seghelpers import save_tiny_segmentation_model

    import dfine
    from dfine.cli import benchmark as command
    from dfine.export.benchmark import count_flops

    model_dir = save_tiny_segmentation_model(tmp_path / "seg", image_size=160)
    detector = dfine.DFineForObjectDetection.from_pretrained(model_dir)
    segmenter = dfine.DFineForInstanceSegmentation.from_pretrained(model_dir)
    expected = count_flops(segmenter.deploy((160, 160)), (160, 160))
    assert expected > 1.5 * count_flops(detector.deploy((160, 160)), (160, 160))
    assert _benchmark(model_dir, "--bf16", "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert f"GFLOPs:      {expected:.1f} per image" in out and "bfloat16" in out
    assert _benchmark(model_dir, "--eager", "--device", "cpu") == 0
    assert "eager (training form)" in capsys.readouterr().out
    # as on a machine with TensorRT: the segmentation model is refused before anything is exported
    find = command.backend_format
    monkeypatch.setattr(command, "backend_format", lambda name: dataclasses.replace(
        find(name), require_export=lambda: None, prepare=lambda device: None))
    assert _benchmark(model_dir, "--backend", "tensorrt") == 2
    assert "is a segmentation model: its masks export to ONNX and OpenVINO only" in _error_line(capsys)

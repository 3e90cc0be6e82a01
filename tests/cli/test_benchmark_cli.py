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

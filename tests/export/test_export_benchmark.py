"""``dfine benchmark``, FLOP counting (the paper's convention) and timing helpers."""

from __future__ import annotations

import pytest
import torch

import dfine
from dfine.cli.main import main
from dfine.export.benchmark import Timing, count_flops, peak_activation_bytes, time_callable
from dfine.model.deploy.deployed import deploy


@pytest.mark.parametrize("preset, paper", [("dfine-n-coco", 7.0), ("dfine-s-coco", 25.0)])
def test_gflops_match_the_paper(preset: str, paper: float) -> None:
    """The paper's GFLOPs are FLOPs = 2 × MACs of the deploy model at 640×640 (N 7, S 25, M 57, L 91, X 202)."""
    model = dfine.DFineForObjectDetection(dfine.DFineConfig.from_preset(preset)).eval()
    assert count_flops(deploy(model, 640), (640, 640)) == pytest.approx(paper, rel=0.03)


def test_timing_statistics() -> None:
    timing = Timing([3.0, 1.0, 2.0, 10.0, 4.0], batch=2)
    assert timing.median_ms == 3.0 and timing.p90_ms == 10.0 and timing.min_ms == 1.0
    assert timing.images_per_s == pytest.approx(2000 / 3)
    calls = []
    measured = time_callable(lambda: calls.append(1), iters=4, warmup=2)
    assert len(calls) == 6 and len(measured.times_ms) == 4


def test_benchmark_cli_torch(n_model_dir, capsys) -> None:
    code = main(["benchmark", "--model", str(n_model_dir), "--image-size", "320", "--iters", "2", "--warmup", "1",
                 "--device", "cpu", "--threads", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "deploy+float32" in out and "parameters:  3.77 M" in out and "GFLOPs:      2.3 per image" in out
    assert "median" in out and "p90" in out and "images/s" in out


def test_benchmark_cli_onnxruntime_and_eager(n_onnx, n_model_dir, capsys) -> None:
    assert main(["benchmark", "--model", str(n_onnx), "--backend", "onnxruntime", "--image-size", "320",
                 "--iters", "2", "--warmup", "1", "--batch-size", "2"]) == 0
    assert "ONNX Runtime CPUExecutionProvider" in capsys.readouterr().out
    assert main(["benchmark", "--model", str(n_model_dir), "--eager", "--bf16", "--image-size", "320",
                 "--iters", "1", "--warmup", "0", "--device", "cpu"]) == 0
    assert "eager (training form), bfloat16" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--half", "--device", "cpu"], "float16 inference needs a CUDA device"),
    (["--backend", "onnxruntime", "--compile"], "torch backend only"),
    (["--batch-size", "0"], "at least 1"),
    (["--half-head"], "--half-head runs the head in the body's half precision: it needs --half or --bf16"),
    (["--eager", "--bf16", "--half-head"], "cannot be combined with --compile, --cuda-graph or --half-head"),
])
def test_benchmark_cli_errors(argv, message, error_line) -> None:
    assert main(["benchmark", "--model", "dfine-n-coco", "--image-size", "320", "--iters", "1", *argv]) == 2
    assert message in error_line()


def test_benchmark_cli_half_head(n_model_dir, capsys) -> None:
    """--bf16 keeps the head in float32 and says so; --half-head runs it in bfloat16 too."""
    argv = ["benchmark", "--model", str(n_model_dir), "--iters", "1", "--warmup", "0", "--device", "cpu", "--bf16"]
    assert main(argv) == 0
    assert "deploy+bfloat16, head float32" in capsys.readouterr().out
    assert main([*argv, "--half-head"]) == 0
    out = capsys.readouterr().out
    assert "deploy+bfloat16" in out and "head float32" not in out


def test_benchmark_onnx_takes_the_graphs_input_size(n_onnx, capsys, error_line) -> None:
    """An .onnx exported at 320 is timed at 320 without --image-size (ONNX Runtime rejects any other size);
    its suffix picks the onnxruntime backend, and asking for torch explicitly names the right one."""
    assert main(["benchmark", "--model", str(n_onnx), "--iters", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "input 1x3x320x320" in out and "ONNX Runtime" in out
    assert main(["benchmark", "--model", str(n_onnx), "--backend", "torch", "--iters", "1"]) == 2
    assert "use --backend onnxruntime" in error_line()
    assert main(["benchmark", "--model", str(n_onnx), "--backend", "onnxruntime", "--image-size", "640",
                 "--iters", "1"]) == 2
    assert "exported for 320x320 input, not --image-size 640" in error_line()


def test_benchmark_exported_file_batch(tmp_path) -> None:
    """A graph's fixed batch is used by default; another explicit batch is refused (a dynamic graph takes any)."""
    from dfine.cli.benchmark import _graph_input
    from dfine.cli.main import build_parser
    from dfine.errors import DFineError

    def args(*extra: str):
        return build_parser().parse_args(["benchmark", "--model", "m.onnx", *extra])

    path = tmp_path / "m.onnx"
    assert _graph_input(args(), path, 4, (320, 320)) == (4, (320, 320))
    assert _graph_input(args("--batch-size", "3"), path, None, (320, 320)) == (3, (320, 320))
    assert _graph_input(args(), path, None, (256, 256)) == (1, (256, 256))
    with pytest.raises(DFineError, match=r"m\.onnx: has a fixed batch of 4, not --batch-size 2"):
        _graph_input(args("--batch-size", "2"), path, 4, (320, 320))


def test_benchmark_defaults_to_the_models_input_size(n_model_dir, capsys) -> None:
    """The model folder's preprocessor_config.json says 320: that is what is timed and counted, not 640."""
    assert main(["benchmark", "--model", str(n_model_dir), "--iters", "1", "--warmup", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "input 1x3x320x320" in out and "GFLOPs:      2.3 per image" in out


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "64"], "image size 64x64 gives 20 encoder positions, fewer than the model's 300 queries"),
    (["--threads", "-3"], "--threads must be at least 1, got -3"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
])
def test_benchmark_cli_checks_arguments_first(argv, message, error_line) -> None:
    assert main(["benchmark", "--model", "dfine-n-coco", "--iters", "1", *argv]) == 2
    assert message in error_line()


def test_benchmark_help_describes_backend_and_batch_size(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--backend {torch,onnxruntime,openvino,tensorrt} what runs the model" in text
    assert "--batch-size BATCH_SIZE images per timed call" in text


def test_peak_activation_bytes_counts_what_is_alive_together() -> None:
    weights = torch.ones(1000)  # exists before the call: not counted

    def one_at_a_time() -> None:
        for _ in range(3):
            (weights * 2).sum()  # each product is freed before the next

    def kept_together() -> list[torch.Tensor]:
        kept = [weights * 2 for _ in range(3)]
        return [t.view(10, 100) for t in kept]  # views share their storage: no extra bytes

    assert 4000 <= peak_activation_bytes(one_at_a_time) < 8000
    assert 12000 <= peak_activation_bytes(kept_together) < 16000


def test_a_gpu_run_without_a_cuda_graph_gets_a_tip() -> None:
    """At batch 1 on a GPU the deploy form without a CUDA graph is launch-bound: the output says what to add."""
    from dfine.cli.benchmark import speed_hint
    from dfine.cli.main import build_parser

    def args(*extra: str):
        parsed = build_parser().parse_args(["benchmark", "--model", "m", *extra])
        parsed.backend = parsed.backend or "torch"
        return parsed

    assert "--cuda-graph" in speed_hint(args(), "cuda")
    assert speed_hint(args("--cuda-graph"), "cuda") is None
    assert speed_hint(args(), "cpu") is None
    assert speed_hint(args("--eager"), "cuda") is None
    assert speed_hint(args("--backend", "onnxruntime"), "cuda") is None


@pytest.mark.parametrize("name", ["m.onnx", "m.engine"])
def test_benchmark_half_is_refused_for_an_exported_file(name, tmp_path, error_line) -> None:
    """An exported file's precision was fixed at export: --half would be ignored while the numbers look fp16."""
    (tmp_path / name).write_bytes(b"not read: the flag is refused first")
    assert main(["benchmark", "--model", str(tmp_path / name), "--half", "--iters", "1"]) == 2
    assert "--half does not apply to an exported file" in error_line()


def test_benchmark_engine_does_not_claim_a_precision(tmp_path, monkeypatch, capsys) -> None:
    """A given engine's precision is not known from the command line: the backend line says TensorRT only."""
    import numpy as np

    from dfine.export import benchmark as bench
    from dfine.export import tensorrt as trt_export

    class FakeRunner:
        batch, image_size = 1, (320, 320)

        def __init__(self, path) -> None:
            pass

        def run(self, images, sizes):
            return np.zeros((1, 300), np.int64), np.zeros((1, 300, 4), np.float32), np.zeros((1, 300), np.float32)

    monkeypatch.setattr(trt_export, "require_tensorrt", lambda: None)
    monkeypatch.setattr(trt_export, "TensorRTRunner", FakeRunner)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(bench, "time_callable", lambda call, **kwargs: (call(), Timing([1.0], batch=1))[1])
    monkeypatch.setattr(bench, "peak_memory_mib", lambda device: None)
    (tmp_path / "m.engine").write_bytes(b"ENGINE")
    assert main(["benchmark", "--model", str(tmp_path / "m.engine"), "--iters", "1"]) == 0
    assert "backend:     tensorrt: TensorRT\n" in capsys.readouterr().out

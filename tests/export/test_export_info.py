"""``dfine info`` on an exported .onnx file and on a training run's two outputs (last.pt and best/)."""

from __future__ import annotations

from dfine import DFineImageProcessor
from dfine.cli.main import main
from dfine.engine.checkpoint import save_best_model, save_checkpoint


def test_info_describes_an_onnx_file(n_onnx, capsys) -> None:
    assert main(["info", str(n_onnx)]) == 0
    out = capsys.readouterr().out
    assert "ONNX (IR" in out and "opset 18" in out and "MiB" in out
    assert "input:       images: float32 [batch, 3, 320, 320]" in out
    assert "input:       orig_target_sizes: int64 [batch, 2]" in out
    assert "output:      boxes: float32 [batch, 300, 4]" in out
    assert "precision:   fp32, batch dynamic" in out and "classes:     80" in out


def test_info_on_a_broken_onnx_or_an_engine_is_one_line(tmp_path, error_line) -> None:
    (tmp_path / "bad.onnx").write_text("not a graph")
    assert main(["info", str(tmp_path / "bad.onnx")]) == 2
    assert "bad.onnx: not a readable ONNX file" in error_line()
    assert main(["info", str(tmp_path / "m.engine")]) == 2
    assert "m.engine: a TensorRT engine cannot be described here" in error_line()


def test_info_reports_the_training_size_of_last_pt_and_best(model_n, tmp_path, capsys) -> None:
    """A run trained at 256 writes best/ (processor config says 256) and last.pt (records image_size): both say
    256, not the 640 default."""
    run = tmp_path / "run"
    save_best_model(model_n, DFineImageProcessor(size={"height": 256, "width": 256}), run / "best")
    state = model_n.state_dict()
    save_checkpoint(run / "last.pt", {"model": state, "ema": {"module": state}, "config": model_n.config.to_dict(),
                                      "image_size": [256, 256]})
    for model in (run / "last.pt", run / "best"):
        assert main(["info", str(model)]) == 0
        assert "input size:  256x256" in capsys.readouterr().out

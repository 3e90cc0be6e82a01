"""ONNX export: graph contract, parity with PyTorch in ONNX Runtime, fp16, and one-line errors."""

from __future__ import annotations

import json
import types

import numpy as np
import onnx
import pytest
import torch

import dfine
from dfine.cli.main import main
from dfine.errors import DFineError
from dfine.export.onnx import compare_with_torch, export_onnx
from dfine.export.verify import Detections, check_images, match_detections, top_detections
from dfine.runtime.onnx import OnnxDetector


def test_graph_contract(n_onnx, model_n) -> None:
    proto = onnx.load(str(n_onnx))
    onnx.checker.check_model(proto)
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    outputs = {o.name: o.type.tensor_type for o in proto.graph.output}
    assert list(inputs) == ["images", "orig_target_sizes"] and list(outputs) == ["labels", "boxes", "scores"]
    assert inputs["images"].elem_type == onnx.TensorProto.FLOAT
    assert inputs["orig_target_sizes"].elem_type == onnx.TensorProto.INT64
    assert outputs["labels"].elem_type == onnx.TensorProto.INT64
    assert [d.dim_param or d.dim_value for d in inputs["images"].shape.dim] == ["batch", 3, 320, 320]
    assert [d.dim_param or d.dim_value for d in outputs["boxes"].shape.dim] == ["batch", 300, 4]
    ops = {node.op_type for node in proto.graph.node}
    assert {"LayerNormalization", "GridSample", "TopK"} <= ops and "BatchNormalization" not in ops
    assert all(node.name.split("/")[0] in ("body", "head", "post") for node in proto.graph.node)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == model_n.config.class_names
    assert meta["orig_target_sizes"] == "width,height" and meta["image_size"] == "320,320"
    assert meta["precision"] == "fp32" and meta["dynamic_batch"] == "true"


def test_onnxruntime_matches_torch_on_a_batch_of_two(n_onnx, model_n) -> None:
    """Original sizes (width, height) differ per image, so a swapped order would show; boxes in pixels."""
    originals = [(800, 600), (400, 700)]
    pictures = check_images(originals, seed=11)
    processor = dfine.DFineImageProcessor(size=320)
    pixels = processor(pictures)["pixel_values"]
    labels, boxes, scores = OnnxDetector(n_onnx).run(pixels.numpy(), np.array(originals))
    assert labels.shape == (2, 300) and boxes.shape == (2, 300, 4) and scores.shape == (2, 300)
    with torch.inference_mode():
        outputs = model_n(pixels)
    scale = np.array([[w, h, w, h] for w, h in originals], dtype=np.float64)
    reference = top_detections(outputs.logits.numpy(), outputs.pred_boxes.numpy(), k=None, scale=scale)
    candidate = [Detections(scores[i], labels[i], boxes[i]) for i in range(2)]
    report = match_detections(reference, candidate, top=100, score_tol=1e-3, box_tol=1e-3 * 800)
    assert report.fraction == 1.0, report.summary() + " " + report.worst
    # the same numbers as the Python post-processor, which takes (height, width)
    post = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(h, w) for w, h in originals])
    assert np.allclose(post[0]["scores"][:10].numpy(), scores[0, :10], atol=1e-3)


def test_export_three_level_size_fixed_batch(tmp_path, synthetic_model) -> None:
    model = synthetic_model("dfine-s-coco")
    result = export_onnx(model, tmp_path / "s.onnx", 320)
    assert result.report is not None and result.report.fraction == 1.0
    assert result.report.max_score_diff < 1e-3 and result.report.max_box_diff < 1e-3
    detector = OnnxDetector(result.path)
    assert detector.batch == 1 and detector.image_size == (320, 320)
    assert len(detector.predict(check_images([(300, 200), (200, 300)]), threshold=0.0)) == 2  # one by one


def test_export_half(tmp_path, model_n) -> None:
    result = export_onnx(model_n, tmp_path / "n16.onnx", 320, half=True)
    proto = onnx.load(str(result.path))
    types = {init.data_type for init in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT in types  # fp16 body, fp32 head
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # callers do not change
    assert result.report is not None and result.report.fraction >= 0.9  # and not empty (checked in the export)
    assert {p.key: p.value for p in proto.metadata_props}["precision"] == "fp16"


def _runner_of(model):
    """A stand-in for an exported graph: ``model`` in PyTorch, with the graph's inputs and top-300 outputs."""

    def run(images, sizes):
        with torch.inference_mode():
            out = model(torch.from_numpy(images))
        dets = top_detections(out.logits.numpy(), out.pred_boxes.numpy(), k=300,
                              scale=np.concatenate([sizes, sizes], 1))
        return (np.stack([d.labels for d in dets]), np.stack([d.boxes for d in dets]).astype(np.float32),
                np.stack([d.scores for d in dets]).astype(np.float32))

    return run


def test_mismatch_is_reported_in_one_line(model_n) -> None:
    """compare_with_torch accepts a faithful runner and rejects one whose boxes are off, in one line."""

    faithful = _runner_of(model_n)

    def shifted(images, sizes):
        labels, boxes, scores = faithful(images, sizes)
        return labels, boxes + 5.0, scores  # every box off by 5 pixels

    assert compare_with_torch(model_n, faithful, (320, 320), 1, False, "fake").fraction == 1.0
    with pytest.raises(DFineError, match="fake check failed") as error:
        compare_with_torch(model_n, shifted, (320, 320), 1, False, "fake")
    assert "\n" not in str(error.value)


class _FewQueries(torch.nn.Module):
    """A model with 20 queries whose 20 best detections are all class 0 (class 1 and 2 come next): like a short
    fine-tune run with --set num_queries=20."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        queries = torch.arange(20, dtype=torch.float32)
        self.logits = torch.stack([2.0 - queries / 100, -queries / 100, -1.0 - queries / 100], dim=-1)[None]
        self.boxes = torch.stack([(queries + 1) / 22, (queries + 1) / 22, torch.full_like(queries, 0.1),
                                  torch.full_like(queries, 0.1)], dim=-1)[None]

    def forward(self, pixel_values):
        batch = len(pixel_values)
        return types.SimpleNamespace(logits=self.logits.expand(batch, -1, -1),
                                     pred_boxes=self.boxes.expand(batch, -1, -1))


def test_a_graph_with_fewer_than_100_detections_is_not_called_empty() -> None:
    """A graph keeps one detection per query: with 20 queries its top-20 labels are compared with PyTorch's top-20,
    not with labels further down PyTorch's list that the graph rightly leaves out."""
    model = _FewQueries()

    def faithful(images, sizes):
        dets = top_detections(model.logits.numpy(), model.boxes.numpy(), k=20,
                              scale=np.concatenate([sizes, sizes], 1))
        return (np.stack([d.labels for d in dets]), np.stack([d.boxes for d in dets]).astype(np.float32),
                np.stack([d.scores for d in dets]).astype(np.float32))

    assert compare_with_torch(model, faithful, (320, 320), 1, False, "fake").fraction == 1.0


def test_cli_checker_failure_is_one_line(n_model_dir, tmp_path, monkeypatch, error_line) -> None:
    def reject(*args, **kwargs):
        raise onnx.checker.ValidationError("simulated: node 3 has an invalid attribute\nsecond line")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    code = main(["export", "--model", str(n_model_dir), "--image-size", "320", "--output", str(tmp_path / "x.onnx")])
    assert code == 2
    assert "fails onnx.checker (simulated: node 3 has an invalid attribute)" in error_line()


@pytest.mark.parametrize("argv, message", [
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
    (["--model", "dfine-n-coco", "--image-size", "300"], "multiple of 32"),
    (["--model", "dfine-n-coco", "--output", "model.txt"], "must end in .onnx"),
])
def test_cli_errors_are_one_line(argv, message, tmp_path, monkeypatch, error_line) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", *argv]) == 2
    assert message in error_line()


def test_cli_too_small_image_size_is_one_line(tmp_path, error_line) -> None:
    """At 224 D-FINE-N has 245 encoder positions for 300 queries: said before exporting, not as a trace failure."""
    assert main(["export", "--model", "dfine-n-coco", "--image-size", "224", "--output", str(tmp_path / "n.onnx")]) == 2
    line = error_line()
    assert "image size 224x224 gives 245 encoder positions, fewer than the model's 300 queries" in line
    assert "--set" not in line  # export has no such option
    assert not (tmp_path / "n.onnx").exists()


def test_exporter_failure_is_one_line_without_colour_codes(model_n, tmp_path, monkeypatch) -> None:
    """The exporter's message has terminal colour codes and a boilerplate first line: the cause is reported."""

    def fail(*args, **kwargs):
        try:
            raise RuntimeError("k not in range for dimension\nmore")
        except RuntimeError as cause:
            raise ValueError("Failed to export. \x1b[96mThis is step 1/3\x1b[0m of exporting. Next steps:\n- a") \
                from cause

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(DFineError) as error:
        export_onnx(model_n, tmp_path / "n.onnx", 320)
    message = str(error.value)
    assert message == ("ONNX export failed in torch.onnx.export (ValueError caused by RuntimeError: k not in range "
                       "for dimension)")


def test_cli_export_defaults_to_the_models_input_size(n_model_dir, model_n, tmp_path, monkeypatch) -> None:
    """Without --image-size the export is at the size the model was trained for, as predict and val use it: the
    folder's preprocessor_config.json (320 here), or the size a training checkpoint (last.pt) records."""
    from dfine.engine.checkpoint import save_checkpoint
    from dfine.export import onnx as onnx_export

    sizes = []
    monkeypatch.setattr(onnx_export, "export_onnx", lambda model, output, size, **kwargs: sizes.append(size)
                        or onnx_export.ExportResult(output, None))
    state = model_n.state_dict()
    last = save_checkpoint(tmp_path / "run" / "last.pt", {"model": state, "ema": {"module": state},
                                                          "config": model_n.config.to_dict(), "image_size": [256, 256]})
    for model in (n_model_dir, last):
        assert main(["export", "--model", str(model), "--output", str(tmp_path / "x.onnx")]) == 0
    assert main(["export", "--model", "dfine-n-coco", "--output", str(tmp_path / "x.onnx")]) == 0
    assert sizes == [(320, 320), (256, 256), (640, 640)]


@pytest.mark.parametrize(("model", "fmt", "expected"), [
    ("ustc-community/dfine-small-coco", "onnx", "dfine-small-coco.onnx"),
    ("weights/dfine_x_coco.pth", "engine", "dfine_x_coco.engine"),
    ("runs/mine/best/", "onnx", "mine-best.onnx"),  # not best.onnx for every run
    ("runs/mine/last.pt", "onnx", "mine-last.onnx"),
    ("best", "onnx", "best.onnx"),
])
def test_default_export_names(model: str, fmt: str, expected: str) -> None:
    from dfine.cli.export import _default_output

    assert str(_default_output(model, fmt)) == expected


def test_export_leaves_the_callers_model_alone(tmp_path, model_n) -> None:
    """The export and its comparison run on copies: a model being trained, in bfloat16, comes back as it went in."""
    import copy

    model = copy.deepcopy(model_n).to(torch.bfloat16).train()
    result = export_onnx(model, tmp_path / "n.onnx", 256)
    assert result.report is not None
    assert model.training and all(m.training for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_compare_with_torch_leaves_the_callers_model_alone(model_n) -> None:
    import copy

    model = copy.deepcopy(model_n).to(torch.bfloat16).train()
    reference = copy.deepcopy(model).float().eval()  # what the comparison should compare with

    faithful = _runner_of(reference)

    assert compare_with_torch(model, faithful, (256, 256), 1, False, "fake").fraction == 1.0
    assert model.training and {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_check_leaves_no_file_behind(existing, tmp_path, model_n, monkeypatch) -> None:
    """The graph is written and checked under a temporary name: a failure removes it, and a good file already at
    the output path stays as it was."""
    from dfine.export import onnx as onnx_export

    def fail(*args, **kwargs):
        raise DFineError("ONNX Runtime check failed: simulated")

    monkeypatch.setattr(onnx_export, "compare_with_torch", fail)
    path = tmp_path / "n.onnx"
    if existing:
        path.write_bytes(b"a good export")
    with pytest.raises(DFineError, match="simulated"):
        export_onnx(model_n, path, 256)
    assert [p.name for p in tmp_path.iterdir()] == (["n.onnx"] if existing else [])
    if existing:
        assert path.read_bytes() == b"a good export"


def test_cli_output_folder_is_one_line_before_exporting(tmp_path, monkeypatch, error_line) -> None:
    from dfine.export import onnx as onnx_export

    def fail(*args, **kwargs):
        raise AssertionError("exported although the output path is a folder")

    monkeypatch.setattr(onnx_export, "_export_graph", fail)
    monkeypatch.setattr("dfine.model.DFineForObjectDetection.from_pretrained", fail)
    (tmp_path / "out.onnx").mkdir()
    (tmp_path / "file").write_text("not a folder")
    assert main(["export", "--model", "dfine-n-coco", "--output", str(tmp_path / "out.onnx")]) == 2
    assert f"{tmp_path / 'out.onnx'}: is a folder" in error_line()
    assert main(["export", "--model", "dfine-n-coco", "--output", str(tmp_path / "file" / "n.onnx")]) == 2
    assert f"{tmp_path / 'file'}: cannot create the output folder" in error_line()

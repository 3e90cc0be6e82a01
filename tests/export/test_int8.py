"""INT8 exports: calibrated on the data set, only the body and the decoder projections quantized, kept only when
the COCO AP on the validation split holds, and one-line errors for what cannot work."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import dfine
from dfine.cli.main import main
from dfine.data import SYNTHETIC_CLASS_NAMES, make_synthetic_dataset
from dfine.errors import DFineError
from dfine.export.int8 import QUANTIZED, Int8Options, check_ap_drop, export_onnx_int8, float_nodes

SIZE = 128  # with 30 queries: the encoder's 8x8 + 4x4 positions are enough to choose them from


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-weight D-FINE-N for the three synthetic shapes (a fast model: 30 queries, 128x128) and a synthetic
    data set of six training and four validation images."""
    root = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    config = dfine.DFineConfig.from_preset("dfine-n-coco", num_queries=30,
                                           id2label=dict(enumerate(SYNTHETIC_CLASS_NAMES)))
    model = dfine.DFineForObjectDetection(config).eval()
    model.save_pretrained(root / "model")
    dfine.DFineImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(root / "model")
    data = make_synthetic_dataset(root / "data", num_train=6, num_val=4, image_size=(SIZE, SIZE))
    return root / "model", data.parent


def test_only_the_body_and_decoder_projections_are_quantized() -> None:
    names = ["body/backbone.model.stem/node_conv2d", "head/layers.0.qk_proj/node_linear_13",
             "head/layers.2.mlp.layers.1/node_linear_48", "head/layers.1.gateway.gate/node_linear_33",
             "head/-/node_linear_6", "head/layers.0/node_matmul_3", "head/bbox_embed.0.layers.2/node_linear_25",
             "head/enc_score_head/node_linear_7", "head/lqe.reg_conf.layers.0/node_linear_54",
             "head/layers.0.offsets_and_weights/node_linear_16", "post/-/node_topk", "head/layers.0.v_projection/x"]
    assert float_nodes(names) == names[4:]


def test_ap_drop_check() -> None:
    check_ap_drop(0.500, 0.4905, 1.0, "m.onnx")  # 0.95 points
    check_ap_drop(0.500, 0.520, 0.0, "m.onnx")  # a gain is never a drop
    with pytest.raises(DFineError) as error:
        check_ap_drop(0.500, 0.489, 1.0, "m.onnx")
    assert str(error.value).startswith("m.onnx: INT8 loses 1.1 AP on the validation split (48.9 vs 50.0 in float), "
                                       "more than the allowed 1: nothing was written")


def _readers_of_dequantized(proto) -> set[str]:
    """The nodes that read a DequantizeLinear output (all but the Q/DQ nodes themselves): the quantized ones."""
    produced = {out for node in proto.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return {node.name for node in proto.graph.node if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(name in produced for name in node.input)}


@pytest.mark.slow  # export, quantization and two evaluations: what the command does
def test_onnx_int8_export_and_val(tiny, tmp_path, capsys) -> None:
    import onnx

    model_dir, data = tiny
    output = tmp_path / "int8.onnx"
    assert main(["export", "--model", str(model_dir), "--format", "onnx", "--int8", "--data", str(data),
                 "--calibration-images", "4", "--output", str(output), "--threads", "1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(rf"wrote {re.escape(str(output))}: INT8 in ONNX Runtime, calibrated on 4 train images; COCO "
                        r"AP on the val split \d+\.\d \(INT8\) vs \d+\.\d \(float\), a drop of -?\d+\.\d \(allowed 1\)",
                        line), line
    proto = onnx.load(str(output))
    assert {p.key: p.value for p in proto.metadata_props}["precision"] == "int8"
    quantized = _readers_of_dequantized(proto)
    assert any(name.startswith("body/") for name in quantized)
    assert any(name.startswith("head/layers.") for name in quantized)
    # the box heads that read the decoder's hidden state, which the next layer's projections quantize, read it in
    # float: nothing kept in float reads a dequantized tensor
    assert [name for name in quantized if not QUANTIZED.match(name)] == []
    assert [p.name for p in tmp_path.iterdir()] == ["int8.onnx"]  # no temporary files left
    assert main(["val", "--model", str(output), "--data", str(data), "--json", "--threads", "1"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_images"] == 4 and 0 <= metrics["AP"] <= 1


@pytest.mark.slow  # export, conversion, quantization and two evaluations: what the command does
def test_openvino_int8_export(tiny, tmp_path, capsys) -> None:
    ov = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    model_dir, data = tiny
    output = tmp_path / "int8.xml"
    assert main(["export", "--model", str(model_dir), "--format", "openvino", "--int8", "--data", str(data),
                 "--calibration-images", "3", "--precision", "f32", "--decoder-layers", "2", "--output",
                 str(output), "--threads", "1"]) == 0
    assert "INT8 in OpenVINO f32, calibrated on 3 train images" in capsys.readouterr().out
    model = ov.Core().read_model(str(output))
    fake_quantized = {op.get_friendly_name() for op in model.get_ordered_ops()
                      for port in op.inputs() if port.get_source_output().get_node().get_type_name() == "FakeQuantize"}
    assert any(name.startswith("body/") for name in fake_quantized)
    assert not any(name.startswith(("post/", "head/-/", "head/bbox_embed", "head/enc_")) for name in fake_quantized)
    meta = {k: v.astype(str) for k, v in model.get_rt_info()["dfine"].items()}
    assert meta["precision"] == "int8" and meta["inference_precision"] == "f32" and meta["decoder_layers"] == "2/3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.bin", "int8.xml"]
    from dfine.runtime.openvino import OpenVinoDetector

    detector = OpenVinoDetector(output, threads=1)
    assert detector.description == "OpenVINO CPU, int8 with f32" and detector.precision == "int8"
    labels, boxes, scores = detector.run(np.random.rand(1, 3, SIZE, SIZE).astype(np.float32), np.array([[64, 48]]))
    assert labels.shape == (1, 30) and np.isfinite(boxes).all() and (np.diff(scores[0]) <= 0).all()


@pytest.mark.slow  # an export and a quantization (the success path is the command line tests')
def test_a_large_ap_drop_writes_nothing(tiny, tmp_path) -> None:
    model_dir, data = tiny
    measured = iter([0.50, 0.48])  # float, then INT8

    def evaluate(detector, data_set, val_split):
        assert data_set == data and val_split == 0.0
        return next(measured)

    model = dfine.DFineForObjectDetection.from_pretrained(model_dir)
    options = Int8Options(data=data, evaluate=evaluate, calibration_images=2)
    with pytest.raises(DFineError, match=r"INT8 loses 2\.0 AP on the validation split \(48\.0 vs 50\.0 in float\), "
                                         r"more than the allowed 1: nothing was written"):
        export_onnx_int8(model, tmp_path / "m.onnx", (SIZE, SIZE), options)
    assert list(tmp_path.iterdir()) == []  # neither the file nor the temporary float graph


@pytest.mark.parametrize(("argv", "message"), [
    (["--int8"], "--int8 needs --data: the data set whose images calibrate the quantization"),
    (["--data", "somewhere"], "--data is for INT8 quantization: add --int8"),
    (["--int8", "--data", "d", "--format", "engine"],
     "--int8 quantizes ONNX and OpenVINO exports, not --format engine"),
    (["--int8", "--data", "d", "--half"], "choose one of --half and --int8"),
    (["--int8", "--data", "d", "--no-check"], "--int8 is checked on the data set's validation split"),
    (["--int8", "--data", "/no/such/data"], "/no/such/data: data set path does not exist"),
])  # fmt: skip
def test_int8_options_are_checked_before_the_model_loads(argv, message, tmp_path, monkeypatch, error_line) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("dfine.model.DFineForObjectDetection.from_pretrained", fail)
    monkeypatch.setattr("dfine.export.formats._engine_require_export", lambda: None)
    if "--format" not in argv:
        argv = [*argv, "--format", "onnx"]
    assert main(["export", "--model", "dfine-n-coco", "--output", str(tmp_path / "m.onnx"), *argv]) == 2
    assert message in error_line()


def test_a_data_set_without_images_or_of_other_classes(tiny, n_model_dir, tmp_path, error_line) -> None:
    model_dir, data = tiny
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "valid").mkdir()
    (empty / "data.yaml").write_text("train: train\nval: valid\nnames: [circle, square, triangle]\n")
    assert main(["export", "--model", str(model_dir), "--format", "onnx", "--int8", "--data", str(empty),
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert error_line().endswith(f"{empty / 'data.yaml'}: no images found in {empty / 'train'}")
    assert main(["export", "--model", str(n_model_dir), "--format", "onnx", "--int8", "--data", str(data),
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert "the model has 80 classes but the data set" in error_line()
    train_only = tmp_path / "train-only.yaml"
    train_only.write_text(f"train:\n  images: {data / 'images' / 'train'}\n  annotations: "
                          f"{data / 'annotations' / 'instances_train.json'}\n")
    assert main(["export", "--model", str(model_dir), "--format", "onnx", "--int8", "--data", str(train_only),
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert error_line().endswith(f"{train_only}: no 'val' split to measure the INT8 model's accuracy on (found: "
                                 "train; a data set without one: --val-split 0.1 as in training)")
    assert not (tmp_path / "m.onnx").exists()

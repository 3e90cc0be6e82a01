"""TensorRT: the not-installed message, and the engine build logic against a stand-in ``tensorrt`` module."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from enum import Enum

import pytest

from dfine.cli.main import main
from dfine.errors import DFineError
from dfine.export import tensorrt as trt_export


@pytest.mark.parametrize("argv", [
    ["export", "--model", "dfine-n-coco", "--format", "engine"],
    ["benchmark", "--model", "dfine-n-coco", "--backend", "tensorrt"],
])
def test_not_installed_is_one_line_exit_2(argv, monkeypatch, error_line) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    assert main(argv) == 2
    line = error_line()
    assert "TensorRT is not installed" in line


# ---------------------------------------------------------------------------------------------- a fake TensorRT
class DataType(Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT32 = "int32"
    INT64 = "int64"


class LayerType(Enum):
    CONVOLUTION = 1
    NORMALIZATION = 2
    SOFTMAX = 3
    MATRIX_MULTIPLY = 4
    TOPK = 5
    SHAPE = 6


class FakeTensor:
    def __init__(self, name: str, dtype: DataType, shape: tuple[int, ...] = ()) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape


class FakeLayer:
    def __init__(self, name: str, kind: LayerType, outputs: list[DataType]) -> None:
        self.name, self.type = name, kind
        self._outputs = [FakeTensor(f"{name}:{i}", t) for i, t in enumerate(outputs)]
        self.precision = None
        self.output_types: dict[int, DataType] = {}

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> FakeTensor:
        return self._outputs[index]

    def set_output_type(self, index: int, dtype: DataType) -> None:
        self.output_types[index] = dtype


class FakeNetwork:
    def __init__(self) -> None:
        f, h, i = DataType.FLOAT, DataType.HALF, DataType.INT32
        self.layers = [
            FakeLayer("body/node_Conv_1", LayerType.CONVOLUTION, [f]),
            FakeLayer("body/node_LayerNormalization_2", LayerType.NORMALIZATION, [f]),  # AIFI, inside the body
            FakeLayer("body/node_Softmax_3", LayerType.SOFTMAX, [f]),
            FakeLayer("head/node_MatMul_4", LayerType.MATRIX_MULTIPLY, [f]),
            FakeLayer("head/node_TopK_5", LayerType.TOPK, [f, i]),
            FakeLayer("head/node_Shape_6", LayerType.SHAPE, [i]),
            FakeLayer("post/node_TopK_7", LayerType.TOPK, [h, i]),
        ]
        self.inputs = [FakeTensor("images", f, (-1, 3, 320, 320)), FakeTensor("orig_target_sizes", DataType.INT64,
                                                                               (-1, 2))]

    num_layers = property(lambda self: len(self.layers))
    num_inputs = property(lambda self: len(self.inputs))

    def get_layer(self, index: int) -> FakeLayer:
        return self.layers[index]

    def get_input(self, index: int) -> FakeTensor:
        return self.inputs[index]


class FakeConfig:
    def __init__(self) -> None:
        self.flags: set[str] = {"TF32"}
        self.profiles: list = []
        self.pool = None

    def set_memory_pool_limit(self, pool, size) -> None:
        self.pool = (pool, size)

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag)

    def add_optimization_profile(self, profile) -> None:
        self.profiles.append(profile)


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name, low, opt, high) -> None:
        self.shapes[name] = (low, opt, high)


def fake_tensorrt(parse_ok: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    # torch._dynamo, when first imported with this in sys.modules, looks for tensorrt with importlib.util.find_spec
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "10.3.0"
    trt.float32, trt.float16, trt.int32, trt.int64 = DataType.FLOAT, DataType.HALF, DataType.INT32, DataType.INT64
    trt.LayerType = LayerType
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY", TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    state = types.SimpleNamespace(network=FakeNetwork(), config=FakeConfig(), profile=FakeProfile())
    trt.state = state

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags):
            return state.network

        def create_builder_config(self):
            return state.config

        def create_optimization_profile(self):
            return state.profile

        def build_serialized_network(self, network, config):
            return b"ENGINE"

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path):
            return parse_ok

        def get_error(self, index):
            return "Unsupported operator FancyOp\nmore details"

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


def test_fp16_engine_keeps_sensitive_layers_fp32(tmp_path, monkeypatch) -> None:
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"graph")
    path = trt_export.build_engine(onnx_file, tmp_path / "m.engine", fp16=True, batch_sizes=(1, 4, 16))
    assert path.read_bytes() == b"ENGINE"
    config, network, profile = trt.state.config, trt.state.network, trt.state.profile
    assert {"FP16", "OBEY"} <= config.flags and "TF32" not in config.flags
    kept = {layer.name: layer for layer in network.layers if layer.precision is not None}
    assert set(kept) == {"body/node_LayerNormalization_2", "body/node_Softmax_3", "head/node_MatMul_4",
                         "head/node_TopK_5", "post/node_TopK_7"}
    assert all(layer.precision is DataType.FLOAT for layer in kept.values())
    assert kept["head/node_TopK_5"].output_types == {0: DataType.FLOAT}  # the int32 indices are left alone
    assert network.layers[0].precision is None  # convolutions of the body may run in fp16
    assert profile.shapes["images"] == ((1, 3, 320, 320), (4, 3, 320, 320), (16, 3, 320, 320))
    assert profile.shapes["orig_target_sizes"][2] == (16, 2) and config.profiles == [profile]


def test_fp32_engine_has_no_constraints(tmp_path, monkeypatch) -> None:
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / "m.onnx").write_bytes(b"graph")
    trt_export.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", fp16=False)
    assert "FP16" not in trt.state.config.flags and "TF32" not in trt.state.config.flags
    assert all(layer.precision is None for layer in trt.state.network.layers)


def test_parser_error_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(parse_ok=False))
    (tmp_path / "m.onnx").write_bytes(b"graph")
    with pytest.raises(DFineError, match="cannot parse .*Unsupported operator FancyOp$"):
        trt_export.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")


class FakeEngine:
    """A deserialised engine with the graph's tensors; ``images`` is (batch or -1, 3, H, W)."""

    def __init__(self, images_shape: tuple[int, ...]) -> None:
        self.shapes = {"images": images_shape, "orig_target_sizes": (images_shape[0], 2),
                       "labels": (images_shape[0], 300), "boxes": (images_shape[0], 300, 4),
                       "scores": (images_shape[0], 300)}
        self.num_io_tensors = len(self.shapes)

    def get_tensor_name(self, index: int) -> str:
        return list(self.shapes)[index]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def create_execution_context(self) -> object:
        return object()


def with_engine(monkeypatch, images_shape: tuple[int, ...]) -> None:
    """A fake TensorRT whose runtime deserialises any file into a FakeEngine, on a pretend CUDA machine."""
    import torch

    trt = fake_tensorrt()
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                       "deserialize_cuda_engine": lambda self, data: FakeEngine(images_shape)})
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_runner_reads_the_engines_input(tmp_path, monkeypatch) -> None:
    (tmp_path / "m.engine").write_bytes(b"ENGINE")
    with_engine(monkeypatch, (-1, 3, 256, 320))
    runner = trt_export.TensorRTRunner(tmp_path / "m.engine")
    assert runner.batch is None and runner.image_size == (256, 320)
    with_engine(monkeypatch, (2, 3, 320, 320))
    assert trt_export.TensorRTRunner(tmp_path / "m.engine").batch == 2


def test_benchmark_engine_of_another_size_is_one_line(tmp_path, monkeypatch, error_line) -> None:
    (tmp_path / "m.engine").write_bytes(b"ENGINE")
    with_engine(monkeypatch, (1, 3, 320, 320))
    assert main(["benchmark", "--model", str(tmp_path / "m.engine"), "--backend", "tensorrt",
                 "--image-size", "640"]) == 2
    assert "m.engine: was exported for 320x320 input, not --image-size 640" in error_line()


def fake_export(monkeypatch, fail_check: bool = False) -> list[int]:
    """A fake TensorRT and a fake ONNX writer; returns the list the comparison appends its batch to (the real
    export and comparison are tested in test_export_onnx.py)."""
    from dfine.export import onnx as onnx_export

    with_engine(monkeypatch, (-1, 3, 320, 320))
    checked: list[int] = []

    def write(model, tmp, path, *args, **kwargs):
        tmp.write_bytes(b"graph")

    def compare(model, run, size, batch, half, backend, processor=None):
        checked.append(batch)
        if fail_check:
            raise DFineError(f"{backend} check failed: simulated")
        return types.SimpleNamespace(summary=lambda: "all detections matched")

    monkeypatch.setattr(onnx_export, "write_checked_onnx", write)
    monkeypatch.setattr(onnx_export, "compare_with_torch", compare)
    return checked


def test_engine_export_writes_engine_and_graph(tmp_path, monkeypatch, model_n) -> None:
    """A dynamic engine for at most one image is checked with one image (its profile allows no more)."""
    checked = fake_export(monkeypatch)
    path = trt_export.export_engine(model_n, tmp_path / "m.engine", 320, dynamic_batch=True, max_batch=1)
    assert path == tmp_path / "m.engine" and path.read_bytes() == b"ENGINE"
    assert (tmp_path / "m.onnx").read_bytes() == b"graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.onnx"]  # no temporary files left
    assert sys.modules["tensorrt"].state.profile.shapes["images"][2] == (1, 3, 320, 320)
    assert checked == [1]
    trt_export.export_engine(model_n, tmp_path / "m.engine", 320, dynamic_batch=True, max_batch=8)
    assert checked == [1, 2]


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_engine_check_leaves_no_file_behind(existing, tmp_path, monkeypatch, model_n) -> None:
    fake_export(monkeypatch, fail_check=True)
    if existing:
        (tmp_path / "m.engine").write_bytes(b"good engine")
        (tmp_path / "m.onnx").write_bytes(b"good graph")
    with pytest.raises(DFineError, match="TensorRT check failed: simulated"):
        trt_export.export_engine(model_n, tmp_path / "m.engine", 320)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m.engine", "m.onnx"] if existing else [])
    if existing:
        assert (tmp_path / "m.engine").read_bytes() == b"good engine"
        assert (tmp_path / "m.onnx").read_bytes() == b"good graph"


def test_engine_output_ending_in_onnx_is_refused_first(tmp_path, monkeypatch, model_n, error_line) -> None:
    """The graph the engine is built from goes beside it as <name>.onnx: an engine called m.onnx would overwrite
    it. Said before any work (the model is not even loaded by the command)."""
    checked = fake_export(monkeypatch)
    with pytest.raises(DFineError, match=r"m\.onnx: .*must not end in \.onnx"):
        trt_export.export_engine(model_n, tmp_path / "m.onnx", 320)
    assert checked == [] and list(tmp_path.iterdir()) == []

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("dfine.model.DFineForObjectDetection.from_pretrained", fail)
    assert main(["export", "--model", "dfine-n-coco", "--format", "engine", "--output", str(tmp_path / "m.onnx")]) == 2
    assert "must not end in .onnx" in error_line()
    (tmp_path / "dir.engine").mkdir()
    assert main(["export", "--model", "dfine-n-coco", "--format", "engine", "--output",
                 str(tmp_path / "dir.engine")]) == 2
    assert f"{tmp_path / 'dir.engine'}: is a folder" in error_line()

"""The measurements behind docs/cpu-deployment.md: INT8 scopes, bf16 agreement, and CPU speed at 640.

    python benchmarks/cpu_deployment.py accuracy --model runs/demo/best --data runs/demo/data/data.yaml
    python benchmarks/cpu_deployment.py agreement --model runs/demo/best --data runs/demo/data/data.yaml
    python benchmarks/cpu_deployment.py speed --sizes n,s

* ``accuracy``: COCO AP / AP50 on the validation split, and latency at the model's own size, of the trained model in
  ONNX Runtime fp32, OpenVINO f32 and bf16, and INT8 (ONNX Runtime static quantization, and NNCF with the float
  parts in bf16 and in f32) for three choices of what INT8 may quantize (:data:`dfine.export.int8.QUANTIZED`).
  Calibrated on up to ``--calibration-images`` training images, as ``dfine export --int8`` does.
* ``agreement``: the share of the f32 IR's top-100 detections per validation image that bf16 reproduces with the
  same label and a box within 2 px at 640 (2/640 of the image), OpenVINO bf16 and PyTorch bf16 (head in fp32);
  over all 100 and over those the f32 model scores above 0.3.
* ``speed``: latency at 640×640 of presets with random weights (speed does not depend on them) in ONNX Runtime fp32
  and INT8 and OpenVINO f32, bf16 and INT8 with the float parts in f32 and in bf16.

Timings are medians of interleaved rounds (one call of each contender per round, ``--threads`` threads, batch 1), so
that a busy machine slows each alike: compare them as ratios within one run.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import interleaved_medians  # noqa: E402  (this folder's own timing helper)

#: what INT8 may quantize: the default, the body alone, and the default plus the deformable-attention offsets
SCOPES = {
    "default": None,  # dfine.export.int8.QUANTIZED as shipped
    "backbone and encoder only": re.compile(r"^body/"),
    "default + deformable-attention offsets": re.compile(
        r"^(body/|head/layers\.\d+\.(qk_proj|v_proj|o_proj|mlp|gateway|offsets_and_weights)[./])"),
}


def _float_ir(model: torch.nn.Module, folder: Path, size: int) -> tuple[Path, Path]:
    from dfine.export.onnx import export_onnx
    from dfine.export.openvino import convert_onnx, save_ir

    onnx_path = export_onnx(model, folder / "float.onnx", size, check=False).path
    ir = folder / "float.xml"
    save_ir(convert_onnx(onnx_path, {}), ir)
    return onnx_path, ir


def _int8(onnx_path: Path, folder: Path, calibration: Any, scope: re.Pattern | None) -> tuple[Path, Path]:
    """ONNX Runtime and OpenVINO INT8 models of ``onnx_path`` with ``scope`` as what may be quantized."""
    import dfine.export.int8 as int8
    from dfine.export.openvino import convert_onnx, save_ir

    shipped = int8.QUANTIZED
    int8.QUANTIZED = scope or shipped
    try:
        folder.mkdir(parents=True, exist_ok=True)
        onnx_int8, ir_int8 = folder / "int8.onnx", folder / "int8.xml"
        int8.quantize_onnx(onnx_path, onnx_int8, calibration)
        save_ir(int8.quantize_openvino(convert_onnx(onnx_path, {}), calibration), ir_int8)
    finally:
        int8.QUANTIZED = shipped
    return onnx_int8, ir_int8


def accuracy(args: argparse.Namespace, work: Path) -> None:
    from dfine import DFineForObjectDetection
    from dfine.export.calibration import calibration_set
    from dfine.predict.evaluate import evaluate_exported
    from dfine.processing.input_size import model_input_size
    from dfine.runtime.onnx import OnnxDetector
    from dfine.runtime.openvino import OpenVinoDetector

    model = DFineForObjectDetection.from_pretrained(args.model).eval()
    size = model_input_size(args.model)[0]
    onnx_path, ir = _float_ir(model, work, size)
    calibration = calibration_set(args.data, (size, size), args.calibration_images)
    cpu = ["CPUExecutionProvider"]
    detectors = {"ONNX Runtime fp32": OnnxDetector(onnx_path, cpu, args.threads),
                 "OpenVINO f32": OpenVinoDetector(ir, threads=args.threads, precision="f32"),
                 "OpenVINO bf16": OpenVinoDetector(ir, threads=args.threads, precision="bf16")}
    for index, (scope, pattern) in enumerate(SCOPES.items()):
        onnx_int8, ir_int8 = _int8(onnx_path, work / f"scope{index}", calibration, pattern)
        detectors[f"ONNX Runtime INT8, {scope}"] = OnnxDetector(onnx_int8, cpu, args.threads)
        for precision in ("bf16", "f32"):
            detectors[f"OpenVINO INT8, {scope}, float parts {precision}"] = OpenVinoDetector(
                ir_int8, threads=args.threads, precision=precision)
    print(f"calibration: {calibration.count} images of the {calibration.split} split", flush=True)
    metrics = {name: evaluate_exported(detector, args.data, "val") for name, detector in detectors.items()}
    images = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    sizes = np.array([[size, size]], dtype=np.int64)
    ms = interleaved_medians({name: (lambda d=d: d.run(images, sizes)) for name, d in detectors.items()},
                             args.rounds)
    print(f"| runtime, precision | AP | AP50 | ms at {size} |\n|---|---|---|---|")
    for name in detectors:
        print(f"| {name} | {100 * metrics[name].AP:.1f} | {100 * metrics[name].AP50:.1f} | {ms[name]:.1f} |")


def _top100_agreement(reference: tuple[np.ndarray, ...], other: tuple[np.ndarray, ...], wh: tuple[int, int]
                      ) -> tuple[float, float | None]:
    """Share of ``reference``'s top 100 that ``other`` has with the same label and a box within 2/640 of the image,
    over all 100 and over those scoring above 0.3 (None when there are none)."""
    labels, boxes, scores = reference
    tolerance = 2 / 640 * np.array([wh[0], wh[1], wh[0], wh[1]])
    found = np.array([bool(((other[0] == labels[r]) & (np.abs(other[1] - boxes[r]) <= tolerance).all(-1)).any())
                      for r in range(100)])
    kept = scores[:100] > 0.3
    return float(found.mean()), (float(found[kept].mean()) if kept.any() else None)


def agreement(args: argparse.Namespace, work: Path) -> None:
    from dfine import DFineForObjectDetection
    from dfine.data import EvalTransforms, resolve_dataset
    from dfine.export.postprocess import postprocess
    from dfine.processing.input_size import model_input_size
    from dfine.runtime.openvino import OpenVinoDetector

    model = DFineForObjectDetection.from_pretrained(args.model).eval()
    size = model_input_size(args.model)[0]
    _, ir = _float_ir(model, work, size)
    f32 = OpenVinoDetector(ir, threads=args.threads, precision="f32")
    bf16 = OpenVinoDetector(ir, threads=args.threads, precision="bf16")
    torch_f32 = model.optimize_for_inference(image_size=size)
    torch_bf16 = model.optimize_for_inference(dtype="bfloat16", image_size=size)
    dataset = resolve_dataset(args.data).build("val", EvalTransforms((size, size)))
    results: dict[str, list[tuple[float, float | None]]] = {"OpenVINO bf16": [], "PyTorch bf16, head fp32": []}
    for index in range(len(dataset)):
        pixels, target = dataset[index]
        height, width = (int(v) for v in target["orig_size"])
        sizes = np.array([[width, height]])
        reference = tuple(x[0] for x in f32.run(pixels.numpy()[None], sizes))
        results["OpenVINO bf16"].append(
            _top100_agreement(reference, tuple(x[0] for x in bf16.run(pixels.numpy()[None], sizes)), (width, height)))
        with torch.inference_mode():
            ours, theirs = torch_f32(pixels[None]), torch_bf16(pixels[None])
            ref = postprocess(ours.logits, ours.pred_boxes, torch.from_numpy(sizes), 300)
            got = postprocess(theirs.logits.float(), theirs.pred_boxes.float(), torch.from_numpy(sizes), 300)
        results["PyTorch bf16, head fp32"].append(
            _top100_agreement(tuple(x[0].numpy() for x in ref), tuple(x[0].numpy() for x in got), (width, height)))
    print(f"{len(dataset)} validation images; mean / worst image")
    print("| | all of the top 100 | those scoring above 0.3 |\n|---|---|---|")
    for name, pairs in results.items():
        every = [a for a, _ in pairs]
        kept = [k for _, k in pairs if k is not None]
        print(f"| {name} | {100 * np.mean(every):.1f}% / {100 * np.min(every):.0f}% | "
              f"{100 * np.mean(kept):.1f}% / {100 * np.min(kept):.0f}% |")


def speed(args: argparse.Namespace, work: Path) -> None:
    from latency import _calibration  # the synthetic calibration pictures of benchmarks/latency.py

    from dfine import DFineConfig, DFineForObjectDetection
    from dfine.runtime.onnx import OnnxDetector
    from dfine.runtime.openvino import OpenVinoDetector

    size = args.image_size
    images = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    sizes = np.array([[size, size]], dtype=np.int64)
    print(f"| size | {' | '.join(['ONNX Runtime fp32', 'ONNX Runtime INT8', 'OpenVINO f32', 'OpenVINO bf16'])} | "
          "OpenVINO INT8, f32 parts | OpenVINO INT8, bf16 parts |\n|---|---|---|---|---|---|---|", flush=True)
    for name in args.sizes.split(","):
        torch.manual_seed(0)
        model = DFineForObjectDetection(DFineConfig.from_preset(f"dfine-{name}-coco")).eval()
        folder = work / name
        folder.mkdir()
        onnx_path, ir = _float_ir(model, folder, size)
        onnx_int8, ir_int8 = _int8(onnx_path, folder / "int8", _calibration(size, 8), None)
        cpu = ["CPUExecutionProvider"]
        detectors = [OnnxDetector(onnx_path, cpu, args.threads), OnnxDetector(onnx_int8, cpu, args.threads),
                     OpenVinoDetector(ir, threads=args.threads, precision="f32"),
                     OpenVinoDetector(ir, threads=args.threads, precision="bf16"),
                     OpenVinoDetector(ir_int8, threads=args.threads, precision="f32"),
                     OpenVinoDetector(ir_int8, threads=args.threads, precision="bf16")]
        ms = interleaved_medians({str(i): (lambda d=d: d.run(images, sizes)) for i, d in enumerate(detectors)},
                                 args.rounds)
        print(f"| {name.upper()} | " + " | ".join(f"{ms[str(i)]:.1f}" for i in range(len(detectors))) + " |",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["accuracy", "agreement", "speed"])
    parser.add_argument("--model", help="a trained model (accuracy, agreement)")
    parser.add_argument("--data", help="its data set (accuracy, agreement)")
    parser.add_argument("--sizes", default="n,s", help="presets for speed (default n,s)")
    parser.add_argument("--image-size", type=int, default=640, help="input size for speed (default 640)")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    args = parser.parse_args(argv)
    if args.what != "speed" and not (args.model and args.data):
        parser.error(f"{args.what} needs --model and --data")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        {"accuracy": accuracy, "agreement": agreement, "speed": speed}[args.what](args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the D-FINE-seg mask branch adds to the CPU latency of a forward pass, against the same size's detector.

    python benchmarks/segmentation_latency.py                      # S, 640, batch 1, 2 threads, 10 rounds
    python benchmarks/segmentation_latency.py --size n --rounds 20 --threads 4
    python benchmarks/segmentation_latency.py --bf16           # also the bf16 fast forms (--bf16 of predict/val)

Goal (issue 19): the mask branch costs at most 25 % extra CPU latency for S at 640. ``DFineForObjectDetection`` and
``DFineForInstanceSegmentation`` of one preset (random weights: the cost does not depend on them) run in eval mode in
one process, in the training form (what ``Predictor`` runs) and in the deploy form (what the exported graphs
hold), and with ``--bf16`` in the fast forms of ``optimize_for_inference(dtype="bf16")`` (body and pixel decoder in
bf16, head and mask products in float32, and with ``--half-head`` in bf16 too), each round timing every model once
in turn, so that a busy machine slows all alike; medians are compared, and the last column compares each
segmentation row with the training form's.
Only the network's forward is timed; the seg post-processing (resizing the kept instances' masks to the image)
depends on how many instances are kept and is not included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfine.config import DFineConfig
from dfine.model import DFineForInstanceSegmentation, DFineForObjectDetection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="s", choices=list("nsmlx"))
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-deploy", action="store_true", help="time the training form only")
    parser.add_argument("--bf16", action="store_true", help="also the bf16 fast forms (float32 head, and half head)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = DFineConfig.from_preset(f"dfine-{args.size}-coco")
    detector = DFineForObjectDetection(config).eval()
    segmenter = DFineForInstanceSegmentation(config).eval()
    models = {("training form", "detection"): detector, ("training form", "segmentation"): segmenter}
    if not args.no_deploy:
        models[("deploy form", "detection")] = detector.deploy(args.image_size)
        models[("deploy form", "segmentation")] = segmenter.deploy(args.image_size)
    if args.bf16:
        for form, head in (("bf16 fast form", torch.float32), ("bf16 fast form, half head", None)):
            for task, model in (("detection", detector), ("segmentation", segmenter)):
                models[(form, task)] = model.optimize_for_inference(dtype="bf16", image_size=args.image_size,
                                                                    head_dtype=head)
    pixels = torch.rand(1, 3, args.image_size, args.image_size)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    with torch.inference_mode():
        for round_ in range(args.warmup + args.rounds):
            for key, model in models.items():
                start = time.perf_counter()
                model(pixels)
                if round_ >= args.warmup:
                    times[key].append(time.perf_counter() - start)

    print(f"D-FINE-{args.size.upper()} at {args.image_size}, batch 1, {args.threads} threads, {args.rounds} rounds "
          f"(median ms; interleaved), torch {torch.__version__}")
    print("| form | detection | segmentation | extra | segmentation speed vs training form |")
    print("|---|---|---|---|---|")
    baseline = statistics.median(times[("training form", "segmentation")]) * 1e3
    for form in dict.fromkeys(form for form, _ in models):
        det = statistics.median(times[(form, "detection")]) * 1e3
        seg = statistics.median(times[(form, "segmentation")]) * 1e3
        print(f"| {form} | {det:.1f} | {seg:.1f} | {100 * (seg / det - 1):+.1f} % | {baseline / seg:.2f}x |")


if __name__ == "__main__":
    main()

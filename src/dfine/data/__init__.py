"""Data: COCO-JSON, YOLO-txt and Pascal VOC XML data sets, format resolution, the data set check, transforms and
batching.

Typical training set-up::

    spec = resolve_dataset(args.data)
    report = check_dataset(spec)                     # raises DatasetError listing every unfixable problem
    print(report.summary())
    train = spec.build("train", TrainTransforms(640, stop_epoch=72))
    val = spec.build("val", EvalTransforms(640))
    loader = build_dataloader(train, 8, shuffle=True, drop_last=True,
                              collate_fn=BatchCollator(640, base_size_repeat=3, stop_epoch=72))
    for epoch in range(epochs):
        loader.set_epoch(epoch)                      # before iterating: reaches sampler, workers, collate
        for batch in loader: ...                     # batch["pixel_values"], batch["labels"]
"""

from dfine.data.check import CheckReport, SplitSummary, check_dataset
from dfine.data.coco import CocoDetection, load_coco_index
from dfine.data.collate import (
    BatchCollator,
    EpochDataLoader,
    EvalShardSampler,
    build_dataloader,
    default_workers,
    multiscale_sizes,
)
from dfine.data.dataset import DetectionDataset
from dfine.data.epoch import SharedEpoch
from dfine.data.images import load_image, probe_image
from dfine.data.index import CategoryTable, DetectionIndex, ImageRecord
from dfine.data.resolve import DatasetSpec, SplitFiles, resolve_dataset
from dfine.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASS_NAMES
from dfine.data.synthetic import make_synthetic_dataset
from dfine.data.transforms import EvalTransforms, TrainTransforms, to_model_target
from dfine.data.voc import load_voc_index
from dfine.data.yolo import YoloDetection, load_yolo_index, read_yolo_yaml

__all__ = [
    "SYNTHETIC_CLASS_NAMES",
    "BatchCollator",
    "CategoryTable",
    "CheckReport",
    "CocoDetection",
    "DatasetSpec",
    "DetectionDataset",
    "DetectionIndex",
    "EpochDataLoader",
    "EvalShardSampler",
    "EvalTransforms",
    "ImageRecord",
    "SharedEpoch",
    "SplitFiles",
    "SplitSummary",
    "TrainTransforms",
    "YoloDetection",
    "build_dataloader",
    "check_dataset",
    "default_workers",
    "load_coco_index",
    "load_image",
    "load_voc_index",
    "load_yolo_index",
    "make_synthetic_dataset",
    "multiscale_sizes",
    "probe_image",
    "read_yolo_yaml",
    "resolve_dataset",
    "to_model_target",
]

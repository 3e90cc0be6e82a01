"""The offline demos (``dfine demo``): D-FINE-N trained in a few CPU minutes on synthetic shapes, for detection
(:mod:`dfine.demo.detection`) or instance segmentation with polygon masks (:mod:`dfine.demo.segmentation`)."""

from dfine.demo.detection import DemoResult, run_demo
from dfine.demo.segmentation import SegmentationDemoResult, run_segmentation_demo

__all__ = ["DemoResult", "SegmentationDemoResult", "run_demo", "run_segmentation_demo"]

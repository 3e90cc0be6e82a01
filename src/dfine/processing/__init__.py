"""The image processor: pictures (and COCO annotations) into model inputs, raw outputs into detections."""

from dfine.processing.batch_feature import BatchFeature
from dfine.processing.processor import DFineImageProcessor

__all__ = ["BatchFeature", "DFineImageProcessor"]

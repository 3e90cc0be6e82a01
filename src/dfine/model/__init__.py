"""The D-FINE network: HGNetv2 backbone, hybrid encoder, FDR decoder, the D-FINE-seg mask branch; its deploy form;
loading checkpoints."""

from dfine.model.auto import load_model, model_class_for
from dfine.model.detection import DFineForObjectDetection, DFineModel
from dfine.model.outputs import DFineInstanceSegmentationOutput, DFineModelOutput, DFineObjectDetectionOutput
from dfine.model.segmentation import DFineForInstanceSegmentation

__all__ = ["DFineForInstanceSegmentation", "DFineForObjectDetection", "DFineInstanceSegmentationOutput", "DFineModel",
           "DFineModelOutput", "DFineObjectDetectionOutput", "load_model", "model_class_for"]

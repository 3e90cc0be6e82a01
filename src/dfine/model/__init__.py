"""The D-FINE network: HGNetv2 backbone, hybrid encoder, FDR decoder; its deploy form; loading checkpoints."""

from dfine.model.detection import DFineForObjectDetection, DFineModel
from dfine.model.outputs import DFineModelOutput, DFineObjectDetectionOutput

__all__ = ["DFineForObjectDetection", "DFineModel", "DFineModelOutput", "DFineObjectDetectionOutput"]

"""The D-FINE network: HGNetv2 backbone, hybrid encoder, FDR decoder."""

from dfine.model.dfine import DFineForObjectDetection, DFineModel
from dfine.model.outputs import DFineModelOutput, DFineObjectDetectionOutput

__all__ = ["DFineForObjectDetection", "DFineModel", "DFineModelOutput", "DFineObjectDetectionOutput"]

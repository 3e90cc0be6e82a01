"""Pictures in and out, without PyTorch: one decoder to upright 8-bit RGB (:mod:`~dfine.imaging.decode`), one
table of file extensions (:mod:`~dfine.imaging.formats`), finding the files a user points at
(:mod:`~dfine.imaging.sources`), http(s) downloads (:mod:`~dfine.imaging.download`), arrays and tensors given as
images (:mod:`~dfine.imaging.inputs`), video (:mod:`~dfine.imaging.video`, PyAV) and drawing
(:mod:`~dfine.imaging.draw`).

Training, the image processor, the predictor and the torch-free runtime all read pictures through this package,
so the same file gives the same pixels everywhere.
"""

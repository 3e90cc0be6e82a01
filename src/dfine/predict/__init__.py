"""Running a model on files, folders, URLs and video and writing the results: the :class:`Predictor`
(:mod:`~dfine.predict.predictor`), folders and videos to ``predictions.json`` and annotated copies
(:mod:`~dfine.predict.files`), tiles of large images (:mod:`~dfine.predict.tiling`) and detections as a COCO file
to correct (:mod:`~dfine.predict.auto_label`)."""

"""The deploy form of the network: an inference-only copy with batch norm folded into the convolutions
(:mod:`~dfine.model.deploy.fuse`), RepVGG branches merged, anchors and FDR weights precomputed
(:mod:`~dfine.model.deploy.head`, :mod:`~dfine.model.deploy.deployed`), and the fast path on top of it: fp16/bf16,
channels-last, ``torch.compile`` and CUDA graphs (:mod:`~dfine.model.deploy.fast`)."""

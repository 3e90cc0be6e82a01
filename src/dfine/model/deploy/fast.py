"""The fast inference path in PyTorch: deploy form, fp16/bf16, channels-last, ``torch.compile``, CUDA graphs.

``optimize_for_inference(model, ...)`` (also ``DFineForObjectDetection.optimize_for_inference``) returns a
:class:`FastDetector`, a module whose ``forward(pixel_values)`` gives :class:`~dfine.model.deploy.head.DetectionOutput`
(``logits``, ``pred_boxes``) like the original model; for a segmentation model (D-FINE-seg),
:class:`~dfine.model.deploy.masks.SegmentationOutput`, which adds ``pred_masks``. What it does:

1. the deploy form (:mod:`dfine.model.deploy.deployed`): folded batch norm, merged RepVGG, precomputed buffers, and a
   forward free of host-device synchronisation;
2. ``dtype`` float16/bfloat16 for the backbone and encoder (nearly all the FLOPs), while query selection, the
   decoder and box decoding stay float32 (``head_dtype``) so that detections agree with float32;
3. channels-last activations (faster convolutions on tensor cores and on x86 CPUs);
4. optionally ``torch.compile`` and/or a CUDA graph with static input buffers (one fixed input shape), which
   removes the Python and kernel-launch overhead that dominates batch-1 latency on a GPU.

GPU-only parts are imported and used only when a CUDA device is given, so everything imports on CPU-only machines.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from dfine.config.image_size import image_size_hw
from dfine.errors import ConfigError, DFineError
from dfine.model.deploy.deployed import DeployedDFine, deploy
from dfine.model.deploy.head import DetectionOutput
from dfine.model.deploy.masks import deploy_segmentation

__all__ = ["CUDAGraphRunner", "FastDetector", "optimize_for_inference"]

logger = logging.getLogger("dfine")

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class CUDAGraphRunner:
    """Replays one captured CUDA graph of ``module`` for inputs of one fixed shape.

    The input is copied into a static buffer, the graph is replayed, and the outputs are cloned (by default) so
    that the next call cannot overwrite what the caller holds. Capture happens in ``__init__``, after warm-up
    iterations on a side stream (cuDNN / cuBLAS pick their algorithms then, outside the capture).
    """

    def __init__(self, module: Callable[[Tensor], DetectionOutput], example: Tensor, warmup: int = 3,
                 clone_outputs: bool = True) -> None:
        if example.device.type != "cuda":
            raise DFineError("CUDA graphs need a CUDA device")
        self.module = module
        self.clone_outputs = clone_outputs
        with torch.inference_mode():
            self.static_input = example.detach().clone()
            stream = torch.cuda.Stream(device=example.device)
            stream.wait_stream(torch.cuda.current_stream(example.device))
            with torch.cuda.stream(stream):
                for _ in range(max(1, warmup)):
                    module(self.static_input)
            torch.cuda.current_stream(example.device).wait_stream(stream)
            torch.cuda.synchronize(example.device)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_output = module(self.static_input)

    @property
    def shape(self) -> torch.Size:
        return self.static_input.shape

    def __call__(self, pixel_values: Tensor) -> DetectionOutput:
        if pixel_values.shape != self.static_input.shape:
            raise DFineError(f"this CUDA graph was captured for inputs of shape {tuple(self.static_input.shape)}, "
                             f"got {tuple(pixel_values.shape)}")
        with torch.inference_mode():
            self.static_input.copy_(pixel_values)
            self.graph.replay()
            kind = type(self.static_output)  # DetectionOutput, or DetectionWithUncertainty
            if self.clone_outputs:
                return kind(*(t.clone() for t in self.static_output))
            return kind(*self.static_output)


class FastDetector(nn.Module):
    """A deployed model with its precision and execution mode (eager, compiled, CUDA graph).

    ``forward(pixel_values)`` accepts float32 pixels in [0, 1] (cast inside) and returns :class:`DetectionOutput`
    (a segmentation model's :class:`~dfine.model.deploy.masks.SegmentationOutput`, with ``pred_masks``).
    ``deployed`` is the underlying :class:`~dfine.model.deploy.deployed.DeployedDFine`; ``config`` its configuration.
    """

    def __init__(self, deployed: DeployedDFine, runner: Callable[[Tensor], DetectionOutput] | None = None,
                 graph: CUDAGraphRunner | None = None) -> None:
        super().__init__()
        self.deployed = deployed
        self.config = deployed.config
        self._runner = runner
        self._graph = graph

    @property
    def mode(self) -> str:
        parts = ["deploy", str(self.deployed.body_dtype).replace("torch.", "")]
        if self._runner is not None:
            parts.append("compiled")
        if self._graph is not None:
            parts.append("cuda-graph")
        return "+".join(parts)

    def forward(self, pixel_values: Tensor) -> DetectionOutput:
        if self._graph is not None and pixel_values.shape == self._graph.shape:
            return self._graph(pixel_values)
        if self._runner is not None:
            return self._runner(pixel_values)
        return self.deployed(pixel_values)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """float32, float16 or bfloat16 from a dtype or its name (fp32, fp16, half, bf16 too); None is float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        names = {str(d).replace("torch.", ""): d for d in _DTYPES}
        names.update({"fp32": torch.float32, "fp16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16})
        if dtype not in names:
            raise ConfigError(f"unsupported dtype {dtype!r}: use float32, float16 or bfloat16")
        return names[dtype]
    if dtype not in _DTYPES:
        raise ConfigError(f"unsupported dtype {dtype}: use float32, float16 or bfloat16")
    return dtype


@torch.no_grad()
def optimize_for_inference(model: nn.Module, dtype: torch.dtype | str | None = None,
                           device: str | torch.device | None = None, compile: bool = False,
                           compile_mode: str | None = None, cuda_graph: bool = False,
                           image_size: int | Sequence[int] | None = None, batch_size: int = 1,
                           channels_last: bool | None = None,
                           head_dtype: torch.dtype | str | None = torch.float32,
                           decoder_layers: int | None = None, uncertainty: bool = False) -> FastDetector:
    """A fast inference version of a D-FINE model (the model itself is not changed).

    Args:
        model: a :class:`~dfine.model.DFineForObjectDetection` or :class:`~dfine.model.DFineForInstanceSegmentation`
            (or an already deployed one). A segmentation model's pixel decoder runs in ``dtype``, its mask
            products in ``head_dtype``.
        dtype: precision of the backbone and encoder: float32 (default), float16 or bfloat16.
        device: where to run (default: the model's device).
        compile: wrap the model in ``torch.compile`` (``fullgraph=True``, static shapes).
        compile_mode: ``torch.compile`` mode (default: inductor's default; "max-autotune-no-cudagraphs" is faster
            on a GPU but compiles for minutes; "reduce-overhead" adds inductor's own CUDA graphs).
        cuda_graph: capture a CUDA graph for inputs of shape (batch_size, 3, *image_size) (CUDA only); other
            shapes still run, without the graph.
        image_size: input size for the precomputed buffers and the CUDA graph (default 640 or the config's).
        batch_size: batch of the CUDA graph.
        channels_last: NHWC activations (default: on, which is faster on CUDA and on x86 CPUs).
        head_dtype: precision of query selection, decoder and box decoding: float32 (the default), or None for
            ``dtype`` too (a "half head"). On an H100 a half head made D-FINE-L 27% faster at batch 32 in fp16 and
            compiled batch-1 latency 2.3 ms instead of 3.1 (docs/benchmarks-gpu.md); its detections agreed with
            float32 on the weights checked there, but check yours: ``dfine val --half --half-head``.
        decoder_layers: run only the first K decoder layers (default: the model's own choice, every layer): faster,
            slightly less accurate, no retraining (:mod:`dfine.model.depth`; ``dfine val --decoder-layers K``
            measures the cost).
        uncertainty: also return each box edge's spread (:meth:`DeployedDFine.set_uncertainty`), decided here
            because compiling and capturing fix what the forward returns.

    Raises:
        DFineError: an unsupported combination (fp16 on a CPU, a CUDA graph without CUDA, ...).
    """
    dtype = resolve_dtype(dtype)
    head_dtype = None if head_dtype is None else resolve_dtype(head_dtype)
    if isinstance(model, FastDetector):
        model = model.deployed
    first = next(model.parameters())
    device = torch.device(device) if device is not None else first.device
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DFineError("a CUDA device was asked for, but CUDA is not available")
    if dtype == torch.float16 and device.type == "cpu":
        raise DFineError("float16 inference needs a CUDA device (on the CPU use bfloat16 or float32)")
    if cuda_graph and device.type != "cuda":
        raise DFineError("CUDA graphs need a CUDA device")
    if isinstance(model, DeployedDFine):
        if decoder_layers is not None and decoder_layers != len(model.head.layers):
            raise ConfigError(f"this model was deployed with {len(model.head.layers)} decoder layers: pass "
                              f"decoder_layers={decoder_layers} with the model it was deployed from")
        # set_precision, to() and to_channels_last() below work in place: the caller's model must keep its own
        deployed = copy.deepcopy(model)
    elif getattr(model.config, "use_mask_head", False):
        deployed = deploy_segmentation(model, image_size, decoder_layers)  # type: ignore[arg-type]  # a copy already
    else:
        deployed = deploy(model, image_size, decoder_layers)  # type: ignore[arg-type]  # a copy already
    size = deployed.image_size if image_size is None else image_size_hw(image_size)
    deployed = deployed.to(device)
    deployed.set_precision(dtype, head_dtype)
    if channels_last is None:
        channels_last = True
    deployed.to_channels_last(channels_last)
    if uncertainty:  # (a deployed model given with its own setting keeps it otherwise)
        deployed.set_uncertainty()
    if device.type == "cuda":
        # fixed shapes: let cuDNN benchmark its convolution algorithms once (a process-wide setting)
        torch.backends.cudnn.benchmark = True

    runner = None
    if compile:
        runner = torch.compile(deployed, mode=compile_mode, fullgraph=True, dynamic=False)
    graph = None
    if cuda_graph:
        example = torch.rand(batch_size, 3, *size, device=device)
        graph = CUDAGraphRunner(runner if runner is not None else deployed, example)
    elif runner is not None:
        logger.info("compiling the model (first call) ...")
        with torch.inference_mode():
            runner(torch.rand(batch_size, 3, *size, device=device))
    return FastDetector(deployed, runner, graph).eval()

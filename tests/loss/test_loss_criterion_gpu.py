"""The criterion on CUDA tensors gives the CPU values, and survives bf16 model outputs (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from dfine.config import DFineConfig
from dfine.loss import build_criterion

pytestmark = pytest.mark.gpu

NUM_CLASSES, LAYERS, QUERIES, BINS = 7, 3, 40, 33


def _synthetic(sizes: list[int], seed: int = 0):
    """Model-shaped training outputs with denoising rows (3 groups), and their targets, on CPU."""
    gen = torch.Generator().manual_seed(seed)
    batch, max_gt, groups = len(sizes), max(sizes), 3
    num_dn = 2 * max_gt * groups
    total = num_dn + QUERIES

    def boxes(*shape):
        centre = 0.3 + 0.4 * torch.rand(*shape, 2, generator=gen)
        return torch.cat([centre, 0.05 + 0.3 * torch.rand(*shape, 2, generator=gen)], -1)

    ref = boxes(batch, 1, total).expand(batch, LAYERS, total, 4)
    outputs = {
        "intermediate_logits": torch.randn(batch, LAYERS + 1, total, NUM_CLASSES, generator=gen),
        "intermediate_reference_points": boxes(batch, LAYERS + 1, total),
        "intermediate_predicted_corners": torch.randn(batch, LAYERS, total, 4 * BINS, generator=gen),
        "initial_reference_points": ref.clone(),
        "enc_topk_logits": torch.randn(batch, QUERIES, NUM_CLASSES, generator=gen),
        "enc_topk_bboxes": boxes(batch, QUERIES),
        "denoising_meta_values": {
            "dn_positive_idx": [torch.cat([torch.arange(n) + 2 * max_gt * g for g in range(groups)]) for n in sizes],
            "dn_num_group": groups,
            "dn_num_split": [num_dn, QUERIES],
        },
    }
    targets = [{"class_labels": torch.randint(0, NUM_CLASSES, (n,), generator=gen), "boxes": boxes(n)} for n in sizes]
    return outputs, targets


def _to(outputs: dict, **kwargs) -> dict:
    tensors = {k: v for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    moved = {k: v.detach().to(**kwargs).clone().requires_grad_() for k, v in tensors.items()}
    moved["denoising_meta_values"] = outputs["denoising_meta_values"]
    return moved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_backward():
    outputs, targets = _synthetic([4, 0, 2])
    criterion = build_criterion(DFineConfig(num_labels=NUM_CLASSES))
    up, reg_scale = torch.tensor([0.5]), torch.tensor([8.0])
    cpu = criterion(_to(outputs), targets, up, reg_scale)
    gpu_outputs = _to(outputs, device="cuda")
    gpu = criterion(gpu_outputs, targets, up.cuda(), reg_scale.cuda())  # targets stay on CPU: moved inside
    assert list(gpu) == list(cpu) and len(gpu) == 38
    for name in cpu:
        assert torch.allclose(gpu[name].cpu(), cpu[name], rtol=1e-4, atol=1e-5), name
    sum(gpu.values()).backward()
    # Everything but the FDR reference R* (detached by design: it only builds the FGL targets) gets a gradient.
    for name, value in gpu_outputs.items():
        if isinstance(value, torch.Tensor) and name != "initial_reference_points":
            assert value.grad is not None and torch.isfinite(value.grad).all(), name
    assert gpu_outputs["initial_reference_points"].grad is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_outputs_under_autocast():
    outputs, targets = _synthetic([3, 5])
    bf16 = _to(outputs, device="cuda", dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = build_criterion(DFineConfig(num_labels=NUM_CLASSES))(bf16, targets, torch.tensor([0.5], device="cuda"),
                                             torch.tensor([4.0], device="cuda"))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()

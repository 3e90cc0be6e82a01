"""Distributed helpers: single-process behaviour, and a real two-process gloo group on CPU."""

from __future__ import annotations

import os
import pickle
import random
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dfine.engine.distributed import (
    all_gather_object,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    reduce_dict,
    seed_everything,
)
from dfine.engine.evaluator import CocoEvaluator
from dfine.engine.logger import MetricMeter

WORLD_SIZE = 2
TIMEOUT_S = 60.0  # generous for a loaded 2-core runner; a healthy run takes a few seconds


def test_single_process_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed() == (0, 0, 1)
    assert not is_distributed()
    assert (get_rank(), get_world_size(), is_main_process()) == (0, 1, True)
    barrier()
    assert all_gather_object({"a": 1}) == [{"a": 1}]
    value = torch.tensor([1.0, 2.0])
    mean = all_reduce_mean(value)
    assert torch.equal(mean, value) and mean is not value
    losses = {"loss_vfl": torch.tensor(0.5, requires_grad=True)}
    reduced = reduce_dict(losses)
    assert reduced["loss_vfl"].item() == 0.5 and not reduced["loss_vfl"].requires_grad
    cleanup_distributed()  # nothing to clean up


def test_seed_everything() -> None:
    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), torch.rand(()).item()

    assert seed_everything(7, rank=0) == 7
    first = draw()
    seed_everything(7, rank=0)
    assert draw() == first
    assert seed_everything(7, rank=1) == 8
    assert draw() != first
    assert seed_everything(3) == 3  # rank defaults to this process' rank (0 here)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def small_ground_truth() -> dict:
    images = [{"id": i, "width": 100, "height": 100} for i in range(1, 7)]
    annotations = [
        {"id": i, "image_id": i, "category_id": i % 2, "bbox": [10.0, 10.0, 20.0 + i, 30.0], "area": 30.0 * (20 + i)}
        for i in range(1, 7)
    ]
    categories = [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def small_predictions() -> dict[int, dict[str, torch.Tensor]]:
    predictions = {}
    for i in range(1, 7):
        shift = 0.0 if i % 3 else 6.0  # every third image is a poorer localisation
        boxes = torch.tensor([[10.0 + shift, 10.0, 30.0 + i, 40.0], [60.0, 60.0, 90.0, 90.0]])
        predictions[i] = {"boxes": boxes, "scores": torch.tensor([0.9, 0.3]), "labels": torch.tensor([i % 2, 0])}
    return predictions


def _worker(rank: int, port: int, out_dir: str) -> None:
    # What torchrun would set for each process.
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE)})  # fmt: skip
    results: dict = {"init": init_distributed(backend="gloo")}
    results["init_again"] = init_distributed()
    results["is_distributed"] = is_distributed()
    results["main"] = is_main_process()
    results["gathered"] = all_gather_object({"rank": rank, "payload": list(range(rank + 1))})
    # Keys built in different orders on the two ranks must still line up.
    losses = {"b": torch.tensor(10.0 * rank), "a": torch.tensor(rank + 1.0)}
    if rank == 1:
        losses = dict(reversed(list(losses.items())))
    results["reduced_mean"] = {k: v.item() for k, v in reduce_dict(losses).items()}
    results["reduced_sum"] = {k: v.item() for k, v in reduce_dict(losses, average=False).items()}
    results["all_reduce_mean"] = all_reduce_mean(torch.full((3,), float(rank))).tolist()

    meter = MetricMeter()
    meter.update({"loss": float(rank + 1)}, n=rank + 1)  # rank 0: 1.0 x1, rank 1: 2.0 x2
    if rank == 1:
        meter.update({"loss_dn": 4.0})  # a term the other rank never saw
    meter.synchronize()
    results["meter"] = meter.averages()

    # Each rank sees half of the images; image 3 is on both, as DistributedSampler padding would do.
    evaluator = CocoEvaluator(small_ground_truth())
    predictions = small_predictions()
    mine = [1, 2, 3] if rank == 0 else [3, 4, 5, 6]
    evaluator.update({i: predictions[i] for i in mine})
    evaluator.synchronize()
    results["image_ids"] = evaluator.image_ids
    results["stats"] = evaluator.compute().stats
    results["seed"] = seed_everything(100)
    cleanup_distributed()
    results["after_cleanup"] = is_distributed()
    with open(Path(out_dir) / f"rank{rank}.pkl", "wb") as file:
        pickle.dump(results, file)


def test_two_process_gloo_group(tmp_path: Path) -> None:
    context = mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"two-process group did not finish within {TIMEOUT_S:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()

    results = [pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes()) for rank in range(WORLD_SIZE)]
    single = CocoEvaluator(small_ground_truth())
    single.update(small_predictions())
    expected_stats = single.compute().stats

    for rank, result in enumerate(results):
        assert result["init"] == (rank, rank, WORLD_SIZE)
        assert result["init_again"] == (rank, rank, WORLD_SIZE)
        assert result["is_distributed"] and not result["after_cleanup"]
        assert result["main"] == (rank == 0)
        assert result["gathered"] == [{"rank": 0, "payload": [0]}, {"rank": 1, "payload": [0, 1]}]
        assert result["reduced_mean"] == {"a": 1.5, "b": 5.0}
        assert result["reduced_sum"] == {"a": 3.0, "b": 10.0}
        assert result["all_reduce_mean"] == [0.5, 0.5, 0.5]
        assert result["meter"]["loss"] == pytest.approx((1.0 + 2 * 2.0) / 3)
        assert result["meter"]["loss_dn"] == 4.0
        assert result["image_ids"] == [1, 2, 3, 4, 5, 6]
        assert result["stats"] == pytest.approx(expected_stats, abs=1e-12)
        assert result["seed"] == 100 + rank
    assert 0.0 < expected_stats[0] < 1.0  # the check is not vacuous


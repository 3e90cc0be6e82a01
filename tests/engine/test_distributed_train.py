"""``torchrun --nproc_per_node 2`` on the CPU (gloo): the same ``dfine.train`` call trains and evaluates with DDP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainhelpers import TINY, drop_annotations, tiny_data

SCRIPT = """
import json, os, sys
import dfine
from dfine.engine.distributed import is_distributed
options = json.loads(sys.argv[3])
result = dfine.train(sys.argv[1], output=sys.argv[2], device="cpu", **options)
assert not is_distributed()  # train() tears down the process group it created
print(f"RANK {os.environ['RANK']} OF {os.environ['WORLD_SIZE']} AP {result.metrics.get('AP')}", flush=True)
"""


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    data = tiny_data(tmp_path / "data", num_train=8, num_val=4)
    # only 3 of the 8 training images have boxes and each process takes 1 image per step, so most steps have a
    # rank whose batch has no box: its denoising embedding is unused, which DDP with find_unused_parameters=False
    # must survive. 4 steps; the 4 validation images are sharded 2 + 2.
    drop_annotations(data, "train", keep_images={0, 1, 2})
    options = {**TINY, "epochs": 1, "batch_size": 2}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(data), str(out), json.dumps(options)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    # both processes write to one pipe, so their lines can interleave: search rather than split lines
    ranks = sorted(re.findall(r"RANK (\d) OF (\d) AP ([0-9.eE+-]+|None)", process.stdout))
    assert [(rank, world) for rank, world, _ in ranks] == [("0", "2"), ("1", "2")], process.stdout[-2000:]
    assert ranks[0][2] == ranks[1][2] != "None"  # both ranks agree on the metrics
    assert process.stdout.count("Training hyper-parameters") == 1  # only rank 0 prints
    assert "4 steps per epoch" in process.stdout and "x 2 process(es)" in process.stdout

    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and state["extra"]["world_size"] == 2 and len(state["rng"]) == 2
    assert state["ema"]["updates"] == 4 and state["hparams"]["batch_size"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and isinstance(records[0]["eval"]["AP"], float)
    assert records[0]["eval"]["num_images"] == 4  # both shards were gathered, none counted twice
    assert (out / "best" / "model.safetensors").exists()

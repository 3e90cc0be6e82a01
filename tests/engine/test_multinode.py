"""Two torchrun "nodes" (1 process each, gloo, this machine) whose run folders are not shared, as on machines that
each write to their own disk: the stop-epoch restart and a resume must give every rank the same state, taken from
rank 0's files, instead of letting ranks without the file train on their own diverging weights."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainhelpers import TINY, tiny_data

SCRIPT = """
import hashlib, json, os, sys
import dfine
from dfine.engine import trainer as tm
from dfine.engine.evaluator import EvalResult

data, root, options, phase = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
aps = iter([0.5, 0.1, 0.1, 0.1])  # epoch 1 is the best of stage 1: the stop epoch (3) restores it
tm.Trainer.validate = lambda self: EvalResult(*([next(aps)] * 14))

class Stop(Exception):
    pass

fit = tm.Trainer.fit
def fit_and_report(self, on_epoch_end=None):
    def stop_after_three(epoch):
        if phase == "first" and epoch == 2:
            raise Stop()  # on every rank at the same point, as a killed job
    try:
        return fit(self, stop_after_three)
    finally:
        digest = hashlib.sha1()
        for p in self.model.parameters():
            digest.update(p.detach().cpu().numpy().tobytes())
        print(f"RANK {os.environ['RANK']} EPOCH {self.state.start_epoch} WEIGHTS {digest.hexdigest()}", flush=True)
tm.Trainer.fit = fit_and_report

out = os.path.join(root, "node" + os.environ["GROUP_RANK"])  # each node its own run folder
try:
    dfine.train(data, output=out, device="cpu", resume=phase == "resume", **options)
except Stop:
    pass
"""


def _launch(script: Path, data: Path, root: Path, options: dict, phase: str) -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank",
         str(node), "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), str(data), str(root),
         json.dumps(options), phase], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for node in (0, 1)]
    outputs = []
    for node in nodes:
        try:
            outputs.append(node.communicate(timeout=300)[0])
        finally:
            node.kill()
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-4000:]
    return outputs


def _weights(outputs: list[str]) -> dict[str, tuple[str, str]]:
    found = dict((rank, (epoch, digest)) for out in outputs
                 for rank, epoch, digest in re.findall(r"RANK (\d) EPOCH (\d+) WEIGHTS (\w+)", out))
    assert set(found) == {"0", "1"}, outputs
    return found


@pytest.mark.slow
def test_nodes_without_a_shared_run_folder_stay_in_step(tmp_path: Path) -> None:
    script = tmp_path / "train_nodes.py"
    script.write_text(SCRIPT)
    data = tiny_data(tmp_path / "data", num_train=8, num_val=4)
    options = {**TINY, "epochs": 4, "batch_size": 2, "stop_epoch": 2}
    # the stop epoch (3) restores epoch 1's state, whose best_stage1.pt only node 0 has: node 1 gets rank 0's
    outputs = _launch(script, data, tmp_path / "run", options, "first")
    first = _weights(outputs)
    assert "restarting from the best stage-1 state (epoch 1" in outputs[0]
    assert first["0"] == first["1"] and first["0"][0] == "3"  # stopped after epoch 3, in step
    assert (tmp_path / "run" / "node0" / "last.pt").is_file() and not (tmp_path / "run" / "node1").exists()
    # node 1 has no last.pt to resume from: rank 0's is used
    resumed = _weights(_launch(script, data, tmp_path / "run", {**TINY}, "resume"))
    assert resumed["0"] == resumed["1"] and resumed["0"][0] == "4" and resumed["0"] != first["0"]
    last = torch.load(tmp_path / "run" / "node0" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["stage"] == 2

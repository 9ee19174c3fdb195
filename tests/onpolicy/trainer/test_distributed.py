"""Two processes (DDP over gloo, CPU) give the same update as one process on the same prompts.

The processes are started by ``torch.distributed.run`` (what ``accelerate launch`` runs for
multi-process jobs) with ``ACCELERATE_USE_CPU=1``: on a CPU-only machine ``accelerate launch --cpu
--num_processes 2`` needs ``mpirun``; with it installed, ``configs/accelerate/ddp_cpu.yaml`` runs
the same command. The CLI is unchanged under either launcher.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from trainer_configs import REPO, base_raw

from onpolicy.config import apply_overrides, from_dict
from onpolicy.trainer import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(output_dir) -> list[float]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["train/loss"] for x in lines if "train/loss" in x]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    # greedy rollouts (deterministic), SGD without clipping (the update is -lr * gradient)
    overrides = [
        "rollout.temperature=0",
        "optim.optimizer=sgd",
        "optim.lr=0.5",
        "optim.grad_clip=null",
        "train.steps=2",
        "eval.num_prompts=0",
    ]
    raw = apply_overrides(base_raw(tmp_path / "two"), overrides)
    raw["train"].update(micro_batch_size=1, grad_accum=2)  # 2 processes x 2 x 1 = 4 prompts/step
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "onpolicy.cli",
        "train",
        "--config",
        str(path),
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    one = from_dict(apply_overrides(base_raw(tmp_path / "one"), overrides))
    one.train.micro_batch_size = 4  # 1 process x 1 x 4 = the same 4 prompts per step
    train(one)

    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-6)
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)

"""Two processes (DDP over gloo, CPU) give the same update as one process on the same prompts.

The processes are started by ``accelerate launch --config_file configs/accelerate/ddp_cpu.yaml``
(MULTI_CPU: accelerate starts them with ``mpirun``, from the ``mpich`` package in the venv) or,
without MPICH, by ``accelerate launch --multi_gpu --num_processes 2`` (torchrun; on a machine
without a GPU the trainer builds a CPU accelerator, so they form a gloo group), with the CLI
unchanged: ``-m onpolicy.cli train --config run.yaml``.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from launch_helpers import ddp_launch_args, losses, train_under_accelerate
from safetensors.torch import load_file
from trainer_configs import base_raw

from onpolicy.config import apply_overrides, from_dict
from onpolicy.trainer import train
from onpolicy.trainer.metrics_log import read_metrics


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
    train_under_accelerate(ddp_launch_args(), path)

    one = from_dict(apply_overrides(base_raw(tmp_path / "one"), overrides))
    one.train.micro_batch_size = 4  # 1 process x 1 x 4 = the same 4 prompts per step
    train(one)

    two_losses = losses(tmp_path / "two")
    assert len(two_losses) == 2
    assert two_losses == pytest.approx(losses(tmp_path / "one"), rel=1e-6)
    # logged metrics are global values under DDP: rank 0 logs what one process sees on all prompts
    two_records, one_records = (read_metrics(tmp_path / d) for d in ("two", "one"))
    for key in ("diag/completion_length", "diag/truncated_share", "diag/repetition_rate",
                "train/student_gen_tokens", "train/teacher_tokens", "divergence_sum"):  # fmt: skip
        assert [r[key] for r in two_records] == pytest.approx([r[key] for r in one_records]), key
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)

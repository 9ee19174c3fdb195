"""DeepSpeed ZeRO-3 on CPU under ``accelerate launch --config_file
configs/accelerate/deepspeed_zero3_cpu.yaml``: two processes (partitioned parameters, gradients and
AdamW state), stopped after a checkpoint and resumed, give the losses and weights of one
uninterrupted process on the same prompts; ``final/`` is a plain Hugging Face folder."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import yaml
from launch_helpers import losses, train_under_accelerate
from safetensors.torch import load_file
from trainer_configs import base_raw

from onpolicy.config import apply_overrides, from_dict
from onpolicy.trainer import train

# greedy rollouts, constant lr; DeepSpeed clips at 1.0 (its config), so does the one process
OPTS = [
    "rollout.temperature=0",
    "optim.scheduler=constant",
    "optim.optimizer=adamw",
    "optim.lr=3e-3",
    "optim.grad_clip=1.0",
    "eval.num_prompts=2",
]


def _write(tmp_path, steps: int):
    raw = apply_overrides(base_raw(tmp_path / "ds"), [*OPTS, f"train.steps={steps}"])
    raw["train"].update(micro_batch_size=2, grad_accum=1)  # 2 processes x 1 x 2 = 4 prompts/step
    path = tmp_path / f"ds{steps}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="pip install deepspeed")
def test_zero3_resume_matches_one_process(tmp_path):
    train_under_accelerate("deepspeed_zero3_cpu.yaml", _write(tmp_path, steps=1), timeout=400)
    ckpt = tmp_path / "ds" / "checkpoints" / "step-00000001"
    assert (ckpt / "pytorch_model").is_dir(), "not a DeepSpeed checkpoint"
    # same output_dir, 2 steps: resumes at step 1 (partitioned AdamW moments and the rollout copy
    # refreshed at load: a lost state or a stale copy changes the second loss or the weights)
    train_under_accelerate("deepspeed_zero3_cpu.yaml", _write(tmp_path, steps=2), timeout=400)

    one = from_dict(apply_overrides(base_raw(tmp_path / "one"), [*OPTS, "train.steps=2"]))
    one.train.micro_batch_size = 4
    result = train(one)
    ds_losses = losses(tmp_path / "ds")
    assert len(ds_losses) == 2
    assert ds_losses == pytest.approx(losses(result.output_dir), rel=1e-5)
    a = load_file(str(result.final_dir / "model.safetensors"))
    b = load_file(str(tmp_path / "ds" / "final" / "model.safetensors"))  # from the full copy
    assert a.keys() == b.keys()
    for k in a:  # AdamW: last-bit gradient differences move weights by up to ~1e-5
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-4, msg=k)

"""A cross-tokenizer run with the reference-KL anchor, stopped and resumed, reproduces the
uninterrupted run's losses exactly: the anchor is the *initial* student, not the resumed weights."""

from __future__ import annotations

import json

import pytest
import torch
from trainer_configs import make_config

from onpolicy.trainer import train

CROSS = (
    "student.path='tiny:tiny,tokenizer=char'",
    "teacher.mode=cross",
    "objective.name=next_byte",
    "objective.params={reference_kl: 1.0}",
    "optim.lr=1e-2",
    "eval.num_prompts=0",
    "train.micro_batch_size=2",
    "train.checkpoint_every=2",
)


def _losses(output_dir):
    rows = [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def _anchor(output_dir):
    rows = [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["next_byte/reference_kl_sum"] for r in rows if "train/loss" in r}


LORA = ("lora.enabled=true", "lora.target_modules=[all-linear]")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_stop_then_resume_reproduces_losses_with_the_reference_anchor(tmp_path, lora):
    """Full student: the reference is a copy taken at load, before the checkpoint is restored;
    LoRA: the base with adapters off (the restored adapters never enter it)."""
    torch.set_num_threads(1)
    opts = CROSS + (LORA if lora else ())
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(make_config(full, *opts, "train.steps=4"))
    train(make_config(cut, *opts, "train.steps=2"))  # stops after 2 steps (checkpoint at 2)
    resumed = train(make_config(cut, *opts, "train.steps=4"))
    assert resumed.resumed_from == 2
    expected, got = _losses(full), _losses(cut)
    assert sorted(got) == [1, 2, 3, 4]
    assert got == expected  # exact: same floats
    anchor = _anchor(cut)
    assert anchor[1] == pytest.approx(0.0, abs=1e-6) and anchor[3] > 1e-6  # the anchor is live

"""A NaN/inf in what an objective trains on (here: a faulty engine's logprob under the
policy-gradient objective) makes the step non-finite: the trainer counts it, skips it with the
weights untouched, and stops after ``train.max_nonfinite``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from trainer_configs import make_config

from onpolicy.errors import TrainingError
from onpolicy.rollout.base import register_backend
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.trainer import train
from onpolicy.trainer.loop import train_step
from onpolicy.trainer.run import make_accelerator
from onpolicy.trainer.setup import build_components
from onpolicy.types import Prompt


@register_backend("hf_nan_logprob_test")
class NanLogprobBackend(HFRolloutBackend):
    """The ``hf`` backend, but its first logprob of each rollout is NaN (a faulty engine)."""

    def generate(self, prompt_ids_B, sampling, prompts=None):
        ro = super().generate(prompt_ids_B, sampling, prompts)
        row = next(i for i, c in enumerate(ro.completion_ids_B) if c)
        ro.sampling_logprobs_B[row][0] = float("nan")
        return ro


def test_trainer_skips_counts_and_stops(tmp_path):
    cfg = make_config(
        tmp_path,
        "objective.name=policy_gradient",
        "rollout.backend=hf_nan_logprob_test",
        "train.steps=5",
        "train.max_nonfinite=2",
        "eval.num_prompts=0",
        "train.save_final=false",
    )
    with pytest.raises(TrainingError, match=r"2 steps had a NaN/inf loss"):
        train(cfg)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/applied"] for r in records] == [0.0, 0.0]
    assert [r["train/nonfinite_steps"] for r in records] == [1, 2]
    assert all(r["train/loss"] == "nan" for r in records)
    assert all(r["pg/nonfinite_inputs_sum"] >= 1 for r in records)
    assert all(r["train/nonfinite_losses"] == 1 for r in records)  # one micro-batch each


def test_trainer_weights_are_untouched_by_skipped_steps(tmp_path):
    cfg = make_config(tmp_path, "objective.name=policy_gradient",
                      "rollout.backend=hf_nan_logprob_test")  # fmt: skip
    accelerator = make_accelerator(cfg)
    c = build_components(cfg, accelerator)
    before = {k: v.clone() for k, v in c.raw_model.state_dict().items()}
    prompts = [Prompt(text="What is 1 plus 1?"), Prompt(text="Name a colour.")]
    result = train_step(c, [prompts], 0, accelerator, 1.0)
    assert result.nonfinite and not result.applied and math.isnan(result.loss)
    for k, v in c.raw_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in c.raw_model.parameters())

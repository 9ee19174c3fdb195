"""The gradient of a step does not depend on how its prompts are split into micro-batches and
accumulation steps (the loss is normalized by the global count of counted tokens), and a NaN loss
skips the step without touching the weights."""

from __future__ import annotations

import pytest
import torch
from trainer_configs import TEACHER, make_config

from onpolicy.chat import render_prompt
from onpolicy.data import load_prompts
from onpolicy.errors import TrainingError
from onpolicy.objectives.base import register_objective
from onpolicy.objectives.reverse_kl import ReverseKL
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer import train
from onpolicy.trainer.loop import micro_batches_for, train_step
from onpolicy.trainer.run import make_accelerator
from onpolicy.trainer.setup import build_components


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # a pretrained student answers greedily with completions of different lengths, the case where
    # a per-micro-batch mean would weigh tokens unequally
    cfg = make_config(
        tmp_path_factory.mktemp("split"),
        f"student.path='{TEACHER}'",
        "teacher.path=tiny:tiny",
        "rollout.temperature=0",
        "optim.optimizer=sgd",
        "optim.lr=0.5",
        "optim.grad_clip=null",
    )
    accelerator = make_accelerator(cfg)
    torch.manual_seed(0)
    c = build_components(cfg, accelerator)
    every = sorted(load_prompts(cfg.data)[0], key=lambda p: len(p.reference))
    prompts = every[:: len(every) // 8][:8]  # short and long answers (sums, colours, counting)
    return cfg, accelerator, c, prompts


def _step_delta(setup, micro_batch_size, grad_accum):
    _cfg, accelerator, c, prompts = setup
    start = {k: v.clone() for k, v in c.raw_model.state_dict().items()}
    mbs = micro_batches_for(prompts, 0, 1, micro_batch_size, grad_accum)
    result = train_step(c, mbs, 0, accelerator, None)
    delta = {k: v - start[k] for k, v in c.raw_model.state_dict().items()}
    c.raw_model.load_state_dict(start)
    return result, delta


def test_same_update_for_any_micro_batch_split(setup):
    _cfg, _, c, prompts = setup
    lengths = {
        len(c.backend.generate([render_prompt(c.tokenizer, p)], c.sampling).completion_ids_B[0])
        for p in prompts
    }
    assert len(lengths) > 1, "completions must differ in length for this test to bite"
    ref_result, ref = _step_delta(setup, 8, 1)
    assert ref_result.applied and ref_result.num_tokens > 0
    assert max(d.abs().max().item() for d in ref.values()) > 1e-4  # the step moved the weights
    for mbs, accum in ((1, 8), (2, 4), (4, 2)):
        result, delta = _step_delta(setup, mbs, accum)
        assert result.num_tokens == ref_result.num_tokens
        assert result.loss == pytest.approx(ref_result.loss, rel=1e-5)
        for k in ref:
            torch.testing.assert_close(delta[k], ref[k], rtol=1e-4, atol=1e-6, msg=k)


@register_objective("nan_after_first_step")
class NanAfterFirstStep(ReverseKL):
    """Reverse KL, but the loss is NaN from optimizer step 1 on (for the non-finite path)."""

    def batch_source(self, step):
        self.step = step
        return "student"

    def loss(self, student, rollout, teacher_scores):
        out = super().loss(student, rollout, teacher_scores)
        if self.step >= 1:
            out.loss_sum = out.loss_sum * float("nan")
        return out


def test_nonfinite_loss_skips_steps_then_stops(tmp_path):
    from safetensors.torch import load_file

    cfg = make_config(
        tmp_path,
        "objective.name=nan_after_first_step",
        "train.steps=6",
        "train.max_nonfinite=2",
        "train.checkpoint_every=1",
        "eval.num_prompts=0",
        "train.keep_checkpoints=5",
    )
    with pytest.raises(
        TrainingError, match=r"2 steps had a NaN/inf loss .* Checkpoints are intact"
    ):
        train(cfg)
    saved = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in saved] == ["step-00000001", "step-00000002", "step-00000003"]
    first, last = (load_file(str(p / "model.safetensors")) for p in (saved[0], saved[-1]))
    for k in first:  # the NaN step was skipped: the weights did not move, and hold no NaN
        assert torch.equal(first[k], last[k]) and torch.isfinite(last[k]).all()
    import json

    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/applied"] for r in records] == [1.0, 0.0, 0.0]
    assert records[-1]["train/nonfinite_steps"] == 2

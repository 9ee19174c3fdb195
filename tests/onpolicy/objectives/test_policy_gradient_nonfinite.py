"""A NaN/inf in what the policy-gradient objective trains on (an engine logprob, a teacher logprob)
reaches its loss instead of being replaced by a made-up ratio (the trainer then counts and skips
the step: tests/onpolicy/trainer/test_nonfinite_inputs.py)."""

from __future__ import annotations

import copy
import math

import pytest
from tiny_same_pair import same_tokenizer_pair

from onpolicy.api import make_objective
from onpolicy.chat import render_prompts
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.types import Prompt, SamplingParams


@pytest.fixture(scope="module")
def setup():
    student, tok, teacher, _ = same_tokenizer_pair()
    prompts = [
        Prompt(messages=({"role": "user", "content": q},)) for q in ("What is 2 plus 2?", "Hi")
    ]
    ro = HFRolloutBackend(student, tok).generate(
        render_prompts(tok, prompts), SamplingParams(10, n=2, seed=3), prompts
    )
    assert sum(len(c) for c in ro.completion_ids_B) > 4
    return student, tok, ro, LocalTeacher(teacher, tok, tok, mode="same").score(ro)


@pytest.mark.parametrize("clip_mode", ["ppo", "tis"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_engine_logprob_reaches_the_loss(setup, clip_mode, bad):
    student, _, ro, scores = setup
    obj = make_objective("policy_gradient", clip_mode=clip_mode)
    clean = obj.loss(student, ro, scores)
    assert math.isfinite(clean.loss_sum.item()) and clean.metrics["pg/nonfinite_inputs_sum"] == 0
    broken = copy.deepcopy(ro)
    row = next(i for i, c in enumerate(broken.completion_ids_B) if c)
    broken.sampling_logprobs_B[row][0] = bad
    out = obj.loss(student, broken, scores)
    assert not math.isfinite(out.loss_sum.item())  # not silently ratio 1
    assert out.metrics["pg/nonfinite_inputs_sum"] == 1
    assert out.num_tokens == clean.num_tokens


def test_nonfinite_teacher_logprob_reaches_the_loss(setup):
    student, _, ro, scores = setup
    broken = copy.copy(scores)
    broken.token_logprobs_N = scores.token_logprobs_N.clone()
    broken.token_logprobs_N[0] = float("-inf")  # the teacher gives a sampled token no mass
    out = make_objective("policy_gradient").loss(student, ro, broken)
    assert not math.isfinite(out.loss_sum.item())
    assert out.metrics["pg/nonfinite_inputs_sum"] == 1


def test_batch_advantage_norm_whitens_and_ignores_scale(setup):
    """``advantage_norm=batch``: the loss no longer depends on the advantages' scale (kl_coef 1 and
    10 give the same loss) and the advantages sum to ~0; a NaN stays the only bad entry."""
    import torch

    from onpolicy.objectives.policy_gradient import whiten

    student, _, ro, scores = setup
    one = make_objective("policy_gradient", kl_coef=1.0, advantage_norm="batch")
    ten = make_objective("policy_gradient", kl_coef=10.0, advantage_norm="batch")
    a, b = one.loss(student, ro, scores), ten.loss(student, ro, scores)
    params = [p for p in student.parameters() if p.requires_grad]
    grad_a = torch.autograd.grad(a.loss_sum, params)
    grad_b = torch.autograd.grad(b.loss_sum, params)
    assert all(
        torch.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(grad_a, grad_b, strict=True)
    )
    assert max(float(g.abs().max()) for g in grad_a) > 1e-4  # a real gradient, not zeros
    assert abs(a.metrics["advantage_sum"]) < 1e-3
    plain = make_objective("policy_gradient", kl_coef=1.0).loss(student, ro, scores)
    assert abs(plain.metrics["advantage_sum"]) > 1.0
    x = torch.tensor([1.0, 3.0, float("nan"), 5.0])
    w = whiten(x)
    assert torch.allclose(w[[0, 1, 3]], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-5)
    assert torch.isnan(w[2])

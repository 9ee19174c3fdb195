"""The Python API: rollout -> score -> loss -> step on tiny real models; global token
normalization across micro-batches; the distillation reward; fixed-completion rollouts."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_same_pair import same_tokenizer_pair

import onpolicy
from onpolicy.api import (
    completion_rollout,
    distillation_reward,
    loss,
    make_objective,
    rollout,
    score,
    step,
)
from onpolicy.rollout.base import make_backend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.types import Prompt, Rollout, SamplingParams

QUESTIONS = ["What is 1 plus 2?", "Count to 3.", "What color is the snow?", "Hi"]


@pytest.fixture(scope="module")
def parts():
    p = same_tokenizer_pair()
    return p.student, p.tokenizer, LocalTeacher(p.teacher, p.teacher_tokenizer, p.tokenizer)


def _prompts():
    return [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS]


def _subset(ro: Rollout, rows: list[int]) -> Rollout:
    return Rollout(
        prompts=ro.prompts, prompt_index_B=[ro.prompt_index_B[i] for i in rows],
        prompt_ids_B=[ro.prompt_ids_B[i] for i in rows],
        completion_ids_B=[ro.completion_ids_B[i] for i in rows],
        sampling_logprobs_B=[ro.sampling_logprobs_B[i] for i in rows],
        finish_reason_B=[ro.finish_reason_B[i] for i in rows],
        texts_B=[ro.texts_B[i] for i in rows],
    )  # fmt: skip


def test_step_normalizes_globally_whatever_the_micro_batch_split(parts):
    student, tok, teacher = parts
    backend = make_backend("hf", model=teacher.model, tokenizer=tok)  # stops: uneven lengths
    ro = rollout(backend, _prompts(), tok, SamplingParams(12, seed=2))
    assert len({len(c) for c in ro.completion_ids_B}) > 1  # uneven lengths make the test bite
    obj = make_objective("reverse_kl")
    updated = []
    for split in ([[0, 1, 2, 3]], [[0], [1, 2, 3]], [[0, 2], [1], [3]]):
        model = copy.deepcopy(student)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        outs = [
            loss(obj, model, _subset(ro, rows), score(teacher, _subset(ro, rows))) for rows in split
        ]
        metrics = step(opt, outs, model=model, max_grad_norm=1e9)
        assert metrics["num_tokens"] == sum(len(c) for c in ro.completion_ids_B)
        updated.append([p.detach().clone() for p in model.parameters()])
    for other in updated[1:]:
        for a, b in zip(updated[0], other, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not torch.equal(updated[0][0], next(student.parameters()))


def test_distillation_reward_is_the_teacher_student_log_ratio(parts):
    student, tok, teacher = parts
    backend = make_backend("hf", model=student, tokenizer=tok)
    ro = rollout(backend, _prompts(), tok, SamplingParams(10, seed=4, n=2))
    scores = score(teacher, ro)
    rewards = distillation_reward(ro, scores)
    teacher_rows = torch.split(scores.token_logprobs_N, scores.num_tokens_B)
    for r, t, s in zip(rewards, teacher_rows, ro.sampling_logprobs_B, strict=True):
        assert r == pytest.approx(float(t.sum()) - sum(s), abs=1e-4)
    assert all(r < 0 for r in rewards)  # a random student is far from the teacher


def test_completion_rollout_ends_with_the_end_of_turn(parts):
    _, tok, _ = parts
    ro = completion_rollout(_prompts()[:2], ["3", "1 2 3"], tok)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert [c[-1] for c in ro.completion_ids_B] == [im_end, im_end]
    assert tok.decode(ro.completion_ids_B[1][:-1]) == "1 2 3"
    assert ro.finish_reason_B == ["stop", "stop"]
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        completion_rollout(_prompts()[:2], ["x"], tok)


def test_top_level_names_resolve_lazily():
    assert onpolicy.LocalTeacher is LocalTeacher and onpolicy.step is step
    with pytest.raises(AttributeError):
        _ = onpolicy.nope

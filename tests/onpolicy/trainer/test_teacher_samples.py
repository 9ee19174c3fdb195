"""Fixed teacher samples (``teacher.samples=fixed``): drawn once, the same for any process split and
on resume; and the compute budget the trainer returns is the sum of what its steps report."""

from __future__ import annotations

import json

import pytest
import torch
from trainer_configs import DATA, TEACHER, make_config

from onpolicy.chat import render_prompt
from onpolicy.config import DataConfig
from onpolicy.data import load_prompts
from onpolicy.errors import DataError
from onpolicy.models import load_model, load_tokenizer, resolve_model_path
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.trainer import sources, train
from onpolicy.trainer.sources import (
    SampleSources,
    completions_for,
    draw_teacher_samples,
    prompt_key,
)
from onpolicy.types import Prompt, SamplingParams


@pytest.fixture(scope="module")
def teacher_src():
    path = resolve_model_path(TEACHER)
    tok = load_tokenizer(path)
    backend = HFRolloutBackend(load_model(path, trainable=False), tok)
    src = SampleSources(None, tok, tok.eos_token_id, teacher_backend=backend, same_tokenizer=True)
    prompts = load_prompts(DataConfig(path=str(DATA)))[0][:10]
    return src, prompts + prompts[:3]  # repeated prompts share their sample


def _split_draw(prompts, sampling, src, world):
    """What process 0 holds after ``world`` processes drew their chunks and gathered them."""
    shared = []  # gather_object's result: every rank's chunks
    for rank in range(world):
        draw_teacher_samples(
            prompts, sampling, src, 0, rank, world, gather=lambda m: shared.extend(m) or m
        )
    return draw_teacher_samples(prompts, sampling, src, 0, 0, world, gather=lambda m: shared)


def test_draw_is_the_same_for_any_process_split(teacher_src, monkeypatch):
    src, prompts = teacher_src
    monkeypatch.setattr(sources, "DRAW_CHUNK", 3)  # 10 distinct prompts: 4 chunks
    sampling = SamplingParams(12, temperature=1.0)
    rng_before = torch.get_rng_state()
    one, spent = draw_teacher_samples(prompts, sampling, src, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training RNG is not consumed
    assert len(one.rows) == 10 and all(len(r) == 1 for r in one.rows.values())
    texts = [r[0][1] for r in one.rows.values()]
    assert len(set(texts)) > 5  # sampled answers to different questions
    for world in (2, 3):
        split, split_spent = _split_draw(prompts, sampling, src, world)
        assert split.rows == one.rows and split_spent.teacher_tokens == spent.teacher_tokens
    again, _ = draw_teacher_samples(prompts, sampling, src, seed=0)
    assert again.rows == one.rows
    other, _ = draw_teacher_samples(prompts, sampling, src, seed=1)
    assert other.rows != one.rows  # the seed is used
    distinct = {prompt_key(p): p for p in prompts}.values()
    want = sum(
        len(render_prompt(src.tokenizer, p)) + len(one.for_prompt(p)[0][0]) for p in distinct
    )
    assert spent.teacher_tokens == want  # prompt once + one per new token, each distinct prompt


def test_fixed_rollout_serves_the_drawn_samples(teacher_src):
    src, prompts = teacher_src
    sampling = SamplingParams(12, temperature=1.0)
    fixed, _ = draw_teacher_samples(prompts, sampling, src, seed=0)
    src = SampleSources(None, src.tokenizer, src.end_id, fixed_teacher=fixed)
    batch = prompts[-4:]  # includes repeated prompts
    ids = [render_prompt(src.tokenizer, p) for p in batch]
    ro, spent = completions_for("teacher", batch, ids, sampling, src)
    assert spent.teacher_tokens == 0  # nothing sampled now
    assert ro.completion_ids_B == [fixed.for_prompt(p)[0][0] for p in batch]
    with pytest.raises(DataError, match="no fixed teacher sample"):
        completions_for("teacher", [Prompt(text="unseen")], [ids[0]], sampling, src)
    assert all(x != x for row in ro.sampling_logprobs_B for x in row)  # no engine logprobs: NaN


def _records(output_dir):
    return [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("objective", "samples"), [("sft", "fixed"), ("sft", "fresh"), ("reverse_kl", "fixed")]
)
def test_budget_is_the_sum_of_the_steps(tmp_path, objective, samples):
    cfg = make_config(
        tmp_path,
        f"objective.name={objective}",
        f"teacher.samples={samples}",
        "train.steps=3",
        "eval.num_prompts=0",
    )
    result = train(cfg)
    steps = _records(tmp_path)
    assert len(steps) == 3
    b = result.budget
    assert b.student_train_tokens == sum(r["train/student_train_tokens"] for r in steps) > 0
    assert b.student_gen_tokens == sum(r["train/student_gen_tokens"] for r in steps)
    per_step_teacher = sum(r["train/teacher_tokens"] for r in steps)
    if objective == "reverse_kl":  # samples the student, the teacher scores: nothing drawn
        assert b.student_gen_tokens > 0 and b.teacher_tokens == per_step_teacher > 0
    elif samples == "fresh":  # the teacher samples every step
        assert b.student_gen_tokens == 0 and b.teacher_tokens == per_step_teacher > 0
    else:  # drawn once before training, for every training prompt: no teacher work in a step
        assert b.student_gen_tokens == 0 and per_step_teacher == 0 and b.teacher_tokens > 0
    assert b.seconds >= sum(r["train/step_seconds"] for r in steps) * 0.999

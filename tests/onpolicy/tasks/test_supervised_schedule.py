"""``train_supervised``'s schedules (the rate each step actually used, read back from AdamW's
first update) and ``complete_prompts``' sampling, on a tiny real model."""

from __future__ import annotations

import math

import pytest
import torch

from onpolicy.tasks.arith_models import ModelSpec, char_tokenizer
from onpolicy.tasks.long_arithmetic import long_arithmetic_task
from onpolicy.tasks.supervised import complete_prompts, train_supervised


def _rates(schedule: str, steps: int) -> list[float]:
    """The learning rate of each optimizer step, captured from the optimizer's param group."""
    tok = char_tokenizer()
    prompts = long_arithmetic_task(digits=2, num_train=16, seed=0).train_prompts
    model = ModelSpec(layers=1, heads=1, ffn=16).build(tok, seed=0)
    seen: list[float] = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = spy
    try:
        train_supervised(model, tok, prompts, steps, 4, 1e-2, 0, schedule=schedule)
    finally:
        torch.optim.AdamW.step = original
    return seen


def test_constant_schedule_keeps_the_rate_after_warmup():
    rates = _rates("constant", 40)  # warm-up: 40 // 20 = 2 steps
    assert rates[0] == pytest.approx(0.5e-2) and rates[1:] == pytest.approx([1e-2] * 39)


def test_cosine_schedule_decays_by_the_formula():
    steps = 40
    rates = _rates("cosine", steps)
    want = [min(1.0, (s + 1) / 2) * 0.5 * (1 + math.cos(math.pi * s / steps)) * 1e-2
            for s in range(steps)]  # fmt: skip
    assert rates == pytest.approx(want)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule='linear'"):
        _rates("linear", 2)


def test_sampled_completions_differ_from_greedy_and_follow_the_seed():
    tok = char_tokenizer()
    task = long_arithmetic_task(digits=2, num_train=16, num_eval=8, seed=0)
    model = ModelSpec(layers=1, heads=1, ffn=16).build(tok, seed=0)  # untrained: high entropy
    prompts = list(task.eval_prompts)
    greedy = complete_prompts(model, tok, prompts, 12)
    assert greedy == complete_prompts(model, tok, prompts, 12)
    torch.manual_seed(1)
    a = complete_prompts(model, tok, prompts, 12, temperature=1.0)
    torch.manual_seed(1)
    b = complete_prompts(model, tok, prompts, 12, temperature=1.0)
    assert a == b and a != greedy

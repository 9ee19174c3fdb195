"""``train_supervised``'s per-step hook: called once after every optimizer step, in order, so a
checkpoint saved from it is the model after that step of the one schedule."""

from __future__ import annotations

import torch

from onpolicy.tasks.arith_models import ModelSpec, char_tokenizer
from onpolicy.tasks.long_arithmetic import long_arithmetic_task
from onpolicy.tasks.supervised import train_supervised


def test_on_step_sees_each_step_after_the_update():
    tok = char_tokenizer()
    prompts = long_arithmetic_task(digits=2, num_train=16, seed=0).train_prompts
    model = ModelSpec(layers=1, heads=1, ffn=16).build(tok, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    seen: list[tuple[int, list[torch.Tensor]]] = []

    def hook(step: int) -> None:
        seen.append((step, [p.detach().clone() for p in model.parameters()]))

    losses = train_supervised(model, tok, prompts, 3, 4, 1e-2, 0, on_step=hook)
    assert [s for s, _ in seen] == [1, 2, 3] and len(losses) == 3
    # the first call already sees updated weights; the last one sees the returned model's
    assert any(not torch.equal(a, b) for a, b in zip(before, seen[0][1], strict=True))
    final = list(model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(seen[-1][1], final, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(seen[0][1], seen[1][1], strict=True))

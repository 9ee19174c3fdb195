"""Your own RL-style loop with the distillation signal added to your own reward.

The student answers "What is a plus b?"; the task reward is 1 when the answer holds the right sum.
Each step: the student samples (``rollout``), the teacher scores the samples (``score``), and the
policy-gradient objective's per-token advantage is the teacher's log-ratio (the distillation
signal: teacher logprob - student logprob) plus the task reward (centered per batch). The
optimizer step normalizes by the token count (``step``). Tiny models, CPU, about a minute:

    python examples/custom_loop.py --steps 60
"""

from __future__ import annotations

import argparse
import random
import re

import torch

from onpolicy.api import distillation_reward, loss, rollout, score, step
from onpolicy.models import load_model, load_tokenizer
from onpolicy.objectives.policy_gradient import PolicyGradient
from onpolicy.rollout.base import make_backend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt, SamplingParams


def sum_prompts(rng: random.Random, n: int) -> list[Prompt]:
    pairs = [(rng.randrange(10), rng.randrange(10)) for _ in range(n)]
    return [
        Prompt(
            messages=({"role": "user", "content": f"What is {a} plus {b}?"},), reference=str(a + b)
        )
        for a, b in pairs
    ]


def task_reward(prompt: Prompt, text: str) -> float:
    """1.0 when the completion's last number is the right sum."""
    numbers = re.findall(r"\d+", text)
    return float(bool(numbers) and numbers[-1] == prompt.reference)


def group_centered(rewards: list[float], prompt_index_B: list[int]) -> list[float]:
    """Each reward minus the mean reward of its prompt's samples (a per-prompt baseline)."""
    groups: dict[int, list[float]] = {}
    for r, i in zip(rewards, prompt_index_B, strict=True):
        groups.setdefault(i, []).append(r)
    return [
        r - sum(groups[i]) / len(groups[i]) for r, i in zip(rewards, prompt_index_B, strict=True)
    ]


def accuracy(backend, prompts, tokenizer) -> float:
    ro = rollout(backend, prompts, tokenizer, SamplingParams(max_new_tokens=16, temperature=0))
    return sum(
        task_reward(prompts[i], t) for i, t in zip(ro.prompt_index_B, ro.texts_B, strict=True)
    ) / len(prompts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    teacher_dir = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    student_dir = tiny_model_dir("tiny", "bpe", seed=0, pretrain_steps=100)
    tokenizer = load_tokenizer(student_dir)
    student = load_model(student_dir)
    teacher = LocalTeacher(
        load_model(teacher_dir, trainable=False),
        load_tokenizer(teacher_dir),
        tokenizer,
        mode="same",
    )
    backend = make_backend("hf", model=student, tokenizer=tokenizer)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr)
    sampling = SamplingParams(max_new_tokens=16, temperature=1.0, n=4)
    held_out = sum_prompts(random.Random(1234), 32)
    print(f"greedy accuracy before: {accuracy(backend, held_out, tokenizer):.2f}")

    for it in range(args.steps):
        prompts = sum_prompts(rng, args.batch)
        ro = rollout(
            backend, prompts, tokenizer, SamplingParams(**{**sampling.__dict__, "seed": it})
        )
        scores = score(teacher, ro)
        rewards = [
            task_reward(prompts[i], t) for i, t in zip(ro.prompt_index_B, ro.texts_B, strict=True)
        ]
        centered = group_centered(rewards, ro.prompt_index_B)  # baseline: the prompt's mean
        objective = PolicyGradient(kl_coef=1.0, reward_fn=lambda _, r=centered: r)
        metrics = step(
            optimizer, loss(objective, student, ro, scores), model=student, max_grad_norm=1.0
        )
        backend.sync_weights(student, it + 1)  # a no-op for hf; vLLM backends copy weights here
        if it % 5 == 0 or it == args.steps - 1:
            distill = distillation_reward(ro, scores)
            print(
                f"step {it:3d}  task reward {sum(rewards) / len(rewards):.2f}  distillation reward "
                f"{sum(distill) / len(distill):8.2f}  loss {metrics['loss']:.3f}"
            )
    print(f"greedy accuracy after:  {accuracy(backend, held_out, tokenizer):.2f}")


if __name__ == "__main__":
    main()

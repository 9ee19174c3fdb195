"""Teacher samples with several teachers (``teachers:``): each prompt sampled by one of them.

A prompt that names a teacher (``Prompt.teacher``) is sampled by it; any other prompt by a teacher
drawn with probability ``weight / sum(weights)`` from an RNG seeded by the run's seed and the
prompt itself (every process and a resumed run draw the same). Each teacher renders the prompt
with its own chat template; a teacher with another tokenizer has its completion texts re-tokenized
by the student (the single-teacher rule, ``onpolicy.trainer.sources.text_rollout``). The result is
one ``Rollout`` in the student's tokens, rows grouped by prompt in the prompts' order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onpolicy.errors import DataError
from onpolicy.types import Prompt, Rollout, SamplingParams


@dataclass
class SamplingTeacher:
    """One teacher's sampler (a rollout backend), its tokenizer and whether it is the student's."""

    sampler: Any
    tokenizer: Any
    same: bool


def pick_teacher(prompt: Prompt, weights: dict[str, float], seed: int) -> str:
    """The prompt's own teacher, else one drawn by weight (seeded by ``seed`` and the prompt)."""
    if prompt.teacher is not None:
        return prompt.teacher
    rng = random.Random(f"{seed}:{prompt.messages!r}:{prompt.text!r}")
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class RoutedSampler:
    """A rollout backend over several teachers' samplers (see the module docstring); its
    rollouts are in the student's tokens (``SampleSources.same_tokenizer`` is then True)."""

    def __init__(
        self,
        teachers: dict[str, SamplingTeacher],
        weights: dict[str, float],
        student_tokenizer: Any,
        end_id: int | None,
        seed: int,
    ) -> None:
        self.teachers, self.weights, self.seed = teachers, weights, seed
        self.student_tokenizer, self.end_id = student_tokenizer, end_id

    def generate(
        self,
        prompt_ids_B: Sequence[Sequence[int]],
        sampling: SamplingParams,
        prompts: Sequence[Prompt] | None = None,
    ) -> Rollout:
        """``sampling.n`` samples per prompt; ``prompt_ids_B`` is the student's rendering."""
        if prompts is None:
            raise DataError("several teachers need the prompts to route their samples")
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(pick_teacher(prompt, self.weights, self.seed), []).append(i)
        rows: dict[int, list[tuple]] = {}  # prompt index -> its rows (student tokens)
        metrics: dict[str, float] = {}
        for name, index in groups.items():
            part = self._sample(name, [prompts[i] for i in index],
                                [list(prompt_ids_B[i]) for i in index], sampling)  # fmt: skip
            for b, j in enumerate(part.prompt_index_B):
                rows.setdefault(index[j], []).append(_row(part, b))
            for key, value in part.metrics.items():
                metrics[key] = metrics.get(key, 0.0) + value
        ordered = [(i, row) for i in range(len(prompts)) for row in rows.get(i, [])]
        return Rollout(
            prompts=list(prompts),
            prompt_index_B=[i for i, _ in ordered],
            prompt_ids_B=[r[0] for _, r in ordered],
            completion_ids_B=[r[1] for _, r in ordered],
            sampling_logprobs_B=[r[2] for _, r in ordered],
            finish_reason_B=[r[3] for _, r in ordered],
            texts_B=[r[4] for _, r in ordered],
            metrics=metrics,
        )

    def _sample(
        self, name: str, prompts: list[Prompt], student_ids: list[list[int]], sampling: Any
    ) -> Rollout:
        """One teacher's samples of ``prompts`` in the student's tokens."""
        from onpolicy.chat import render_prompt
        from onpolicy.trainer.sources import text_rollout

        t = self.teachers.get(name)
        if t is None or t.sampler is None:
            raise DataError(f"teacher {name!r} cannot sample (mode: self, or not a teacher)")
        if t.same:
            return t.sampler.generate(student_ids, sampling, prompts)
        sampled = t.sampler.generate([render_prompt(t.tokenizer, p) for p in prompts], sampling,
                                     prompts)  # fmt: skip
        ends = [r == "stop" for r in sampled.finish_reason_B]
        rows = [student_ids[i] for i in sampled.prompt_index_B]
        out = text_rollout(prompts, sampled.prompt_index_B, rows, list(sampled.texts_B), ends,
                           self.student_tokenizer, self.end_id)  # fmt: skip
        out.metrics = dict(sampled.metrics)
        return out

    def sync_weights(self, model: Any, step: int) -> dict[str, float]:
        return {}  # teachers are fixed

    def close(self) -> None:
        for t in self.teachers.values():
            close = getattr(t.sampler, "close", None)
            if close is not None:
                close()


def _row(rollout: Rollout, b: int) -> tuple:
    return (
        rollout.prompt_ids_B[b],
        rollout.completion_ids_B[b],
        rollout.sampling_logprobs_B[b],
        rollout.finish_reason_B[b],
        rollout.texts_B[b],
    )

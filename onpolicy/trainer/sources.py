"""Where a step's completions come from (``Objective.batch_source``), as a ``Rollout`` in the
student's tokens.

- ``student``: the student's own samples (on-policy), from its rollout backend;
- ``teacher``: the teacher's samples (sequence-level KD / SFT baseline), re-tokenized by the student
  when the tokenizers differ;
- ``dataset``: the prompts' reference completions (supervised KD), tokenized by the student.

A completion that ended (teacher stop or a dataset reference) gets the student's end-of-turn token,
so the student learns to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onpolicy.errors import DataError
from onpolicy.objectives.base import BatchSource
from onpolicy.rollout.base import RolloutBackend
from onpolicy.types import Prompt, Rollout, SamplingParams


def completions_for(
    source: BatchSource,
    prompts: Sequence[Prompt],
    prompt_ids_B: Sequence[Sequence[int]],
    sampling: SamplingParams,
    student_backend: RolloutBackend,
    tokenizer: Any,
    end_id: int | None,
    teacher_backend: RolloutBackend | None = None,
    render_teacher: Any = None,
    same_tokenizer: bool = True,
) -> Rollout:
    """A ``Rollout`` for ``prompts`` from ``source`` (see the module docstring).

    ``render_teacher(prompt) -> ids`` renders a prompt with the teacher's template (teacher source).
    """
    if source == "student":
        return student_backend.generate(prompt_ids_B, sampling, prompts)
    if source == "dataset":
        return reference_rollout(prompts, prompt_ids_B, tokenizer, end_id)
    if source != "teacher":
        raise ValueError(f"unknown batch source {source!r}")
    if teacher_backend is None:
        raise DataError("this objective needs teacher samples but no teacher model is loaded")
    teacher_ids = [render_teacher(p) for p in prompts] if not same_tokenizer else prompt_ids_B
    sampled = teacher_backend.generate(teacher_ids, sampling, prompts)
    if same_tokenizer:
        return sampled
    texts = list(sampled.texts_B)
    ends = [r == "stop" for r in sampled.finish_reason_B]
    rows = [list(prompt_ids_B[i]) for i in sampled.prompt_index_B]
    return text_rollout(list(prompts), sampled.prompt_index_B, rows, texts, ends, tokenizer, end_id)


def reference_rollout(
    prompts: Sequence[Prompt],
    prompt_ids_B: Sequence[Sequence[int]],
    tokenizer: Any,
    end_id: int | None,
) -> Rollout:
    """The prompts' ``reference`` completions as a ``Rollout`` (one row per prompt)."""
    missing = [i for i, p in enumerate(prompts) if not p.reference]
    if missing:
        raise DataError(
            f"{len(missing)} prompts have no reference completion (first: {missing[0]}); the "
            "supervised objective needs a `completion` column in the dataset"
        )
    texts = [p.reference or "" for p in prompts]
    return text_rollout(
        list(prompts),
        list(range(len(prompts))),
        [list(p) for p in prompt_ids_B],
        texts,
        [True] * len(prompts),
        tokenizer,
        end_id,
    )


def text_rollout(
    prompts: list[Prompt],
    prompt_index_B: list[int],
    prompt_ids_B: list[list[int]],
    texts_B: list[str],
    ended_B: list[bool],
    tokenizer: Any,
    end_id: int | None,
) -> Rollout:
    """Completion texts tokenized by the student (+ ``end_id`` where the completion ended).

    The sampling logprobs are unknown for text that the student did not sample: NaN, so that
    any objective that needs them fails loudly instead of using a made-up value.
    """
    ids_B = []
    for text, ended in zip(texts_B, ended_B, strict=True):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if ended and end_id is not None:
            ids.append(end_id)
        if not ids:
            raise DataError("a completion is empty after tokenization; drop empty completions")
        ids_B.append(ids)
    return Rollout(
        prompts=prompts,
        prompt_index_B=prompt_index_B,
        prompt_ids_B=prompt_ids_B,
        completion_ids_B=ids_B,
        sampling_logprobs_B=[[float("nan")] * len(ids) for ids in ids_B],
        finish_reason_B=["stop" if e else "length" for e in ended_B],
        texts_B=list(texts_B),
    )

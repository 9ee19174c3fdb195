"""Where a step's completions come from (``Objective.batch_source``), as a ``Rollout`` in the
student's tokens, with the compute spent producing it.

- ``student``: the student's own samples (on-policy), from its rollout backend;
- ``teacher``: the teacher's samples (sequence-level KD / SFT baseline), re-tokenized by the student
  when the tokenizers differ; fresh ones each step (``teacher.samples=fresh``) or one fixed sample
  per prompt drawn once before training (``teacher.samples=fixed``: ``draw_teacher_samples``);
- ``dataset``: the prompts' reference completions (supervised KD), tokenized by the student.

A completion that ended (teacher stop or a dataset reference) gets the student's end-of-turn token,
so the student learns to stop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onpolicy.errors import DataError
from onpolicy.objectives.base import BatchSource
from onpolicy.rollout.base import RolloutBackend
from onpolicy.trainer.step_metrics import ComputeBudget, positions
from onpolicy.types import Prompt, Rollout, SamplingParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DRAW_CHUNK = 64  # prompts per ``generate`` call when drawing fixed teacher samples


@dataclass
class FixedTeacherSamples:
    """The teacher's samples drawn once per distinct prompt (``teacher.samples=fixed``).

    Attributes:
        rows: per prompt (``prompt_key``), its ``sampling.n`` samples as ``(teacher completion
            ids, text, ended)``.
    """

    rows: dict[tuple, list[tuple[list[int], str, bool]]] = field(default_factory=dict)

    def for_prompt(self, prompt: Prompt) -> list[tuple[list[int], str, bool]]:
        """The samples of ``prompt`` (a ``DataError`` when none were drawn for it)."""
        found = self.rows.get(prompt_key(prompt))
        if found is None:
            raise DataError("a prompt has no fixed teacher sample; draw them for every prompt")
        return found


def prompt_key(prompt: Prompt) -> tuple:
    """A hashable key for what a model sees of a prompt (its text or messages)."""
    messages = tuple(tuple(sorted(m.items())) for m in prompt.messages or ())
    return (prompt.text, messages)


@dataclass
class SampleSources:
    """What ``completions_for`` draws from.

    Attributes:
        student_backend: the student's rollout backend (``student`` source).
        tokenizer, end_id: the student's tokenizer and end-of-turn (or EOS) id for text completions.
        teacher_backend: samples from the teacher (``teacher`` source), None without a teacher.
        render_teacher: ``prompt -> ids`` with the teacher's template (tokenizers differ).
        same_tokenizer: teacher and student share the tokenizer (teacher ids are used as they are).
        fixed_teacher: fixed teacher samples; None = fresh samples every step.
    """

    student_backend: RolloutBackend | None
    tokenizer: PreTrainedTokenizerBase
    end_id: int | None
    teacher_backend: RolloutBackend | None = None
    render_teacher: Callable[[Prompt], list[int]] | None = None
    same_tokenizer: bool = True
    fixed_teacher: FixedTeacherSamples | None = None


def completions_for(
    source: BatchSource,
    prompts: Sequence[Prompt],
    prompt_ids_B: Sequence[Sequence[int]],
    sampling: SamplingParams,
    src: SampleSources,
) -> tuple[Rollout, ComputeBudget]:
    """A ``Rollout`` for ``prompts`` from ``source`` (see the module docstring) and the sampling
    compute it spent (``student_gen_tokens`` / ``teacher_tokens``; nothing for fixed samples)."""
    if source == "student":
        if src.student_backend is None:
            raise DataError("this objective samples the student but no rollout backend is given")
        rollout = src.student_backend.generate(prompt_ids_B, sampling, prompts)
        return rollout, ComputeBudget(student_gen_tokens=positions(rollout))
    if source == "dataset":
        return reference_rollout(prompts, prompt_ids_B, src.tokenizer, src.end_id), ComputeBudget()
    if source != "teacher":
        raise ValueError(f"unknown batch source {source!r}")
    if src.fixed_teacher is not None:
        return _fixed_rollout(prompts, prompt_ids_B, src), ComputeBudget()
    if src.teacher_backend is None:
        raise DataError("this objective needs teacher samples but no teacher model is loaded")
    same = src.same_tokenizer or src.render_teacher is None
    teacher_ids = [list(x) for x in prompt_ids_B] if same else _teacher_prompt_ids(prompts, src)
    sampled = src.teacher_backend.generate(teacher_ids, sampling, prompts)
    spent = ComputeBudget(teacher_tokens=positions(sampled))
    if src.same_tokenizer:
        return sampled, spent
    texts = list(sampled.texts_B)
    ends = [r == "stop" for r in sampled.finish_reason_B]
    rows = [list(prompt_ids_B[i]) for i in sampled.prompt_index_B]
    ro = text_rollout(
        list(prompts), sampled.prompt_index_B, rows, texts, ends, src.tokenizer, src.end_id
    )
    return ro, spent


def draw_teacher_samples(
    prompts: Sequence[Prompt],
    sampling: SamplingParams,
    src: SampleSources,
    seed: int,
    rank: int = 0,
    world: int = 1,
    gather: Callable[[list[Any]], list[Any]] | None = None,
) -> tuple[FixedTeacherSamples, ComputeBudget]:
    """One set of ``sampling.n`` teacher samples per distinct prompt, drawn once.

    Prompts are drawn in chunks of ``DRAW_CHUNK`` (in order of first appearance), chunk ``c`` with
    the sampling seed ``seed * 1_000_003 + c``: the samples depend on neither the training RNG nor
    the number of processes (exact resume). Process ``rank`` draws chunks ``c % world == rank``;
    ``gather`` (e.g. accelerate's ``gather_object``) shares them. Returns the samples and the
    global compute (teacher positions; the wall seconds of the draw).
    """
    if src.teacher_backend is None:
        raise DataError("teacher.samples=fixed needs a teacher model (teacher.path)")
    start = time.perf_counter()
    first: dict[tuple, Prompt] = {}
    for p in prompts:
        first.setdefault(prompt_key(p), p)
    distinct = list(first.values())  # in order of first appearance
    chunks = [distinct[i : i + DRAW_CHUNK] for i in range(0, len(distinct), DRAW_CHUNK)]
    mine = []
    for c in range(rank, len(chunks), world):
        chunk = chunks[c]
        drawn = src.teacher_backend.generate(
            _teacher_prompt_ids(chunk, src),
            dataclasses.replace(sampling, seed=seed * 1_000_003 + c),
            chunk,
        )
        mine.append((c, drawn.prompt_index_B, drawn.completion_ids_B, drawn.texts_B,
                     [r == "stop" for r in drawn.finish_reason_B], positions(drawn)))  # fmt: skip
    everything = gather(mine) if gather is not None else mine
    out, spent = FixedTeacherSamples(), 0
    for c, index_B, ids_B, texts_B, ended_B, n_pos in sorted(everything, key=lambda x: x[0]):
        spent += n_pos
        for i, ids, text, ended in zip(index_B, ids_B, texts_B, ended_B, strict=True):
            out.rows.setdefault(prompt_key(chunks[c][i]), []).append((list(ids), text, ended))
    seconds = time.perf_counter() - start
    return out, ComputeBudget(teacher_tokens=spent, seconds=seconds)


def _teacher_prompt_ids(prompts: Sequence[Prompt], src: SampleSources) -> list[list[int]]:
    """The prompts rendered for the teacher (as the student renders them when tokenizers match)."""
    if src.same_tokenizer or src.render_teacher is None:
        from onpolicy.chat import render_prompt

        return [list(render_prompt(src.tokenizer, p)) for p in prompts]
    return [list(src.render_teacher(p)) for p in prompts]


def _fixed_rollout(
    prompts: Sequence[Prompt], prompt_ids_B: Sequence[Sequence[int]], src: SampleSources
) -> Rollout:
    """The fixed teacher samples of ``prompts`` as a ``Rollout`` in the student's tokens."""
    assert src.fixed_teacher is not None
    index_B, ids_B, texts_B, ended_B = [], [], [], []
    for i, prompt in enumerate(prompts):
        for ids, text, ended in src.fixed_teacher.for_prompt(prompt):
            index_B.append(i)
            ids_B.append(ids)
            texts_B.append(text)
            ended_B.append(ended)
    rows = [list(prompt_ids_B[i]) for i in index_B]
    if not src.same_tokenizer:
        return text_rollout(list(prompts), index_B, rows, texts_B, ended_B, src.tokenizer,
                            src.end_id)  # fmt: skip
    return Rollout(
        prompts=list(prompts),
        prompt_index_B=index_B,
        prompt_ids_B=rows,
        completion_ids_B=ids_B,
        sampling_logprobs_B=[[float("nan")] * len(ids) for ids in ids_B],
        finish_reason_B=["stop" if e else "length" for e in ended_B],
        texts_B=texts_B,
    )


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
    allow_empty: bool = False,
) -> Rollout:
    """Completion texts tokenized by the student (+ ``end_id`` where the completion ended).

    The sampling logprobs are unknown for text that the student did not sample: NaN, so that
    any objective that needs them fails loudly instead of using a made-up value. An empty
    completion is a ``DataError`` unless ``allow_empty``.
    """
    ids_B = []
    for text, ended in zip(texts_B, ended_B, strict=True):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if ended and end_id is not None:
            ids.append(end_id)
        if not ids and not allow_empty:
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

"""Cross-tokenizer teacher scoring: the teacher's own view of each conversation, aligned by bytes.

Per row: the prompt is rendered with the *teacher's* chat template; the student's completion
bytes (from its token ids, never from decoded text) are tokenized by the teacher; the two
tokenizations of those bytes are aligned into spans (``alignment.align_spans``). The student's
stop token (EOS / end of turn) and the teacher's end-of-turn token form one extra span of their
own (matched by role), so the student still learns when to stop. Completion bytes that are not
valid UTF-8 (a random student can sample half a character) cannot be given to the teacher as text:
the row is aligned up to its longest valid prefix of whole tokens; the rest belongs to no span
(``teacher/coverage`` reports the share of student tokens in a span).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from onpolicy.chat import end_of_turn_token_id, render_prompt, stop_token_ids
from onpolicy.errors import DataError
from onpolicy.teacher.types import CrossTeacherScores, TeacherScores
from onpolicy.types import PaddedBatch, Rollout

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")

if TYPE_CHECKING:
    from onpolicy.teacher.local import LocalTeacher


@dataclass
class TeacherView:
    """One row seen by the teacher.

    Attributes:
        prompt_ids: the teacher's rendering of the prompt (its own template).
        completion_ids: the teacher's tokens of the completion bytes (+ its end of turn).
        student_span_Ts: int64 span per student completion token, ``-1`` for none.
        teacher_span_Tt: int64 span per teacher completion token, ``-1`` for none.
        num_spans: spans in this row.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    student_span_Ts: torch.Tensor
    teacher_span_Tt: torch.Tensor
    num_spans: int


def teacher_view(
    prompt_ids: list[int],
    student_completion: list[int],
    student_tokenizer: Any,
    teacher_tokenizer: Any,
    student_stops: tuple[int, ...],
    teacher_end: int | None,
) -> TeacherView:
    """The teacher's tokens for one row and the span alignment of the completion (module doc)."""
    from alignment.offsets import byte_offsets, token_offsets
    from alignment.spans import align_spans

    ended = bool(student_completion) and student_completion[-1] in student_stops
    body = student_completion[:-1] if ended else student_completion
    offsets_Ts, data = token_offsets(student_tokenizer, body)
    keep = _valid_prefix(offsets_Ts, data)
    text = data[: int(offsets_Ts[keep - 1, 1])].decode("utf-8") if keep else ""
    teacher_ids, teacher_off = byte_offsets(teacher_tokenizer, text, add_special_tokens=False)
    student_span = torch.full((len(student_completion),), -1, dtype=torch.long)
    teacher_span = torch.full((len(teacher_ids),), -1, dtype=torch.long)
    if keep:
        s_span, teacher_span = align_spans(offsets_Ts[:keep], teacher_off)
        student_span[:keep] = s_span
    num_spans = max([-1, *student_span.tolist(), *teacher_span.tolist()]) + 1
    completion = teacher_ids.tolist()
    if ended and teacher_end is not None and keep == len(body):  # stop <-> end of turn: one span
        completion.append(teacher_end)
        teacher_span = torch.cat([teacher_span, torch.tensor([num_spans])])
        student_span[-1] = num_spans
        num_spans += 1
    return TeacherView(prompt_ids, completion, student_span, teacher_span, num_spans)


def _valid_prefix(offsets_T2: torch.Tensor, data: bytes) -> int:
    """Number of leading tokens whose bytes decode as UTF-8 (all of them for valid text)."""
    try:
        data.decode("utf-8")
        return len(offsets_T2)
    except UnicodeDecodeError as err:
        bad = err.start
    ends = offsets_T2[:, 1].tolist()  # the last token ending where the bytes so far decode
    return max((k + 1 for k, e in enumerate(ends) if e <= bad and _decodes(data[:e])), default=0)


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def score_cross(teacher: LocalTeacher, rollout: Rollout) -> TeacherScores:
    """``TeacherScores(mode="cross")`` for ``rollout`` (see the module docstring)."""
    if not rollout.prompts:
        raise DataError(
            "cross-tokenizer scoring needs the rollout's prompts (to render them with the "
            "teacher's template); pass prompts= to the backend's generate"
        )
    s_tok, t_tok = teacher.student_tokenizer, teacher.tokenizer
    s_stops = stop_token_ids(s_tok)
    t_end = end_of_turn_token_id(t_tok)
    t_end = t_tok.eos_token_id if t_end is None else t_end
    t_prompts = [render_prompt(t_tok, p) for p in rollout.prompts]
    views = [
        teacher_view(t_prompts[i], c, s_tok, t_tok, s_stops, t_end)
        for i, c in zip(rollout.prompt_index_B, rollout.completion_ids_B, strict=True)
    ]
    batch = PaddedBatch.from_ragged(
        [v.prompt_ids for v in views], [v.completion_ids for v in views], t_tok.pad_token_id
    )
    fwd = teacher.forward_teacher_tokens(batch)
    logprobs = torch.log_softmax(fwd.logits_N_V.float(), dim=-1)
    token_logprobs = logprobs.gather(1, fwd.targets_N[:, None]).squeeze(1)
    matched = teacher.matched_vocab()
    spanned = sum(int((v.student_span_Ts >= 0).sum()) for v in views)
    total = sum(len(c) for c in rollout.completion_ids_B)
    cross = CrossTeacherScores(
        prompt_ids_B=[v.prompt_ids for v in views],
        completion_ids_B=[v.completion_ids for v in views],
        logits_Nt_V=fwd.logits_N_V,
        token_logprobs_Nt=token_logprobs,
        num_tokens_B=fwd.num_tokens_B,
        student_span_B=[v.student_span_Ts for v in views],
        teacher_span_B=[v.teacher_span_Tt for v in views],
        num_spans_B=[v.num_spans for v in views],
        vocab_size=teacher.vocab_size,
        matched_student_ids_M=matched[0],
        matched_teacher_ids_M=matched[1],
    )
    return TeacherScores(
        mode="cross",
        vocab_size=teacher.vocab_size,
        num_tokens_B=[len(c) for c in rollout.completion_ids_B],
        cross=cross,
        metrics={"teacher/coverage": spanned / max(total, 1)},
    )


def matched_vocab_pairs(student_tokenizer: Any, teacher_tokenizer: Any) -> tuple[torch.Tensor, ...]:
    """(student_ids_M, teacher_ids_M): tokens that spell the same bytes on both sides (``Ġthe``
    and ``▁the`` match), special tokens excluded. ``alignment.vocab_map`` when present."""
    try:
        from alignment.vocab_map import matched_pairs  # type: ignore[import-not-found]
    except ImportError:
        matched_pairs = None
    if matched_pairs is not None:
        return tuple(matched_pairs(student_tokenizer, teacher_tokenizer))
    s_index, t_index = _canonical_ids(student_tokenizer), _canonical_ids(teacher_tokenizer)
    pairs = sorted((i, t_index[b]) for b, i in s_index.items() if b in t_index)
    s_ids = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    t_ids = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    return s_ids, t_ids


def _canonical_ids(tokenizer: Any) -> dict[bytes, int]:
    """bytes -> one id per byte string (non-special tokens), so pairs are one-to-one: where
    several ids spell the same bytes (a character and its byte-fallback ``<0xNN>``), the
    tokenizer's own piece wins over the byte-fallback token."""
    from alignment.offsets import token_bytes_table

    table = token_bytes_table(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(table.bytes_V))))
    index: dict[bytes, int] = {}
    for i, b in enumerate(table.bytes_V):
        if not b or table.special_V[i]:
            continue
        if b not in index or _BYTE_PIECE.fullmatch(pieces[index[b]] or ""):
            index[b] = i
    return index

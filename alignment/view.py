"""The teacher's own view of a student sample: its chat template, its tokens, aligned on bytes.

Given the teacher's prompt ids and the student's sampled completion ids:

1. The teacher's prompt is the conversation rendered once, by the caller, with the **teacher's**
   chat template (``alignment.tokens.chat.render_messages``; ``onpolicy.chat.render_prompt``).
2. The completion's bytes come from the student's token bytes (``token_offsets``), never from
   decoded text, so a completion cut in the middle of a character keeps its exact bytes. They are
   tokenized by the teacher tokenizer on their own (after the prompt). Bytes that are not valid
   UTF-8 become the teacher's single-byte tokens (byte-level ``Ġ``-alphabet or ``<0xNN>``).
3. Stop tokens: if the completion ends with a student stop token (EOS or its template's
   end-of-turn), it is removed from the byte alignment and the teacher's end-of-turn token is
   appended; the two form one extra, zero-byte span at the end, matched by role, so the student
   is taught to stop where the teacher would end its turn. Other special tokens inside a completion
   are zero-width (span ``-1``).
4. Only the completion is aligned (``align_spans`` on the two sides' completion offsets).

``collate_views`` pads a batch of views and puts the span indices on full-sequence positions
(``-1`` on prompts and padding), the layout ``alignment.spans.chain_rule`` consumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alignment.errors import AlignmentError
from alignment.spans.align import align_spans
from alignment.tokens.chat import stop_ids, turn_end_id
from alignment.tokens.offsets import encode_bytes, token_offsets
from alignment.types import SpanAlignment, TeacherView


def teacher_view(
    teacher_prompt_ids: Sequence[int],
    student_completion_ids: Sequence[int] | torch.Tensor,
    student_tokenizer: Any,
    teacher_tokenizer: Any,
    student_stop_ids: Sequence[int] | None = None,
) -> TeacherView:
    """Build the teacher's input for one sample and align the completion tokens.

    Args:
        teacher_prompt_ids: the conversation the student answered, rendered with the teacher's
            template (e.g. ``render_messages(teacher_tokenizer, messages)``).
        student_completion_ids: the student's sampled ids (stop token included if it stopped).
        student_tokenizer / teacher_tokenizer: Hugging Face fast tokenizers.
        student_stop_ids: ids that count as the student stopping (default: its EOS and its
            template's end-of-turn).

    Returns:
        ``TeacherView`` (see ``alignment.types``).
    """
    ids = [int(i) for i in student_completion_ids]
    stops = stop_ids(student_tokenizer) if student_stop_ids is None else set(student_stop_ids)
    stopped = bool(ids) and ids[-1] in stops
    s_off, data = token_offsets(student_tokenizer, ids[:-1] if stopped else ids)
    t_ids, t_off = encode_bytes(teacher_tokenizer, data)
    s_span, t_span = align_spans(s_off, t_off)
    num_spans = int(max(s_span.max(), t_span.max())) + 1 if data else 0
    if stopped:
        t_eot = turn_end_id(teacher_tokenizer)
        if t_eot is None:
            raise AlignmentError(
                "the teacher tokenizer has neither an end-of-turn token nor an EOS; set its "
                "eos_token so the student's stop can be scored"
            )
        s_span = torch.cat([s_span, torch.tensor([num_spans])])
        t_span = torch.cat([t_span, torch.tensor([num_spans])])
        t_ids = [*t_ids, t_eot]
        num_spans += 1
    prompt = [int(i) for i in teacher_prompt_ids]
    return TeacherView(
        teacher_input_ids_T=torch.tensor(prompt + t_ids, dtype=torch.long),
        completion=slice(len(prompt), len(prompt) + len(t_ids)),
        student_span_Ts=s_span,
        teacher_span_Tt=t_span,
        num_spans=num_spans,
        stopped=stopped,
    )


def collate_views(
    views: Sequence[TeacherView],
    student_prompt_lens_B: Sequence[int],
    student_T: int,
    teacher_pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, SpanAlignment]:
    """Pad a batch of teacher views and place the span indices on full-sequence positions.

    Args:
        views: one ``TeacherView`` per row.
        student_prompt_lens_B: each row's student prompt length (its completion starts there, as
            in ``onpolicy.types.PaddedBatch``).
        student_T: the student batch's padded length ``Ts``.
        teacher_pad_id: id that pads the teacher rows.

    Returns:
        (teacher_input_ids_B_Tt, teacher_attention_B_Tt, alignment): right-padded teacher inputs,
        their int64 attention mask, and a ``SpanAlignment`` whose ``[B, Ts]`` / ``[B, Tt]`` span
        tensors index token positions of the full sequences (``-1`` on prompts and padding), the
        layout ``alignment.spans.chain_rule`` takes.
    """
    B = len(views)
    Tt = max((len(v.teacher_input_ids_T) for v in views), default=0)
    t_ids = torch.full((B, Tt), teacher_pad_id, dtype=torch.long)
    t_att = torch.zeros((B, Tt), dtype=torch.long)
    s_span = torch.full((B, student_T), -1, dtype=torch.long)
    t_span = torch.full((B, Tt), -1, dtype=torch.long)
    for b, (view, p) in enumerate(zip(views, student_prompt_lens_B, strict=True)):
        n, c, k = len(view.teacher_input_ids_T), view.completion, len(view.student_span_Ts)
        if p + k > student_T:
            raise AlignmentError(
                f"row {b}: student prompt {p} + completion {k} tokens exceed student_T={student_T}"
            )
        t_ids[b, :n], t_att[b, :n] = view.teacher_input_ids_T, 1
        t_span[b, c] = view.teacher_span_Tt
        s_span[b, p : p + k] = view.student_span_Ts
    num_spans_B = torch.tensor([v.num_spans for v in views], dtype=torch.long)
    return t_ids, t_att, SpanAlignment(s_span, t_span, num_spans_B)

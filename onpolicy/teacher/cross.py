"""Cross-tokenizer teacher scoring: the teacher's own view of each conversation, aligned by bytes.

Per row (``alignment.teacher_view``): the prompt is rendered with the *teacher's* chat
template; the student's completion bytes (from its token ids, never from decoded text; invalid
UTF-8 included) are tokenized by the teacher; the two tokenizations of those bytes are aligned into
spans (``alignment.align_spans``). The student's stop token (EOS / end of turn) and the teacher's
end-of-turn token form one extra span (matched by role), so the student still learns to stop.
"""

from __future__ import annotations

from typing import Any

import torch

from alignment import teacher_view
from onpolicy.chat import render_prompt, stop_token_ids
from onpolicy.errors import DataError
from onpolicy.forward import spare_row_empty
from onpolicy.losses import token_logprobs_chunked
from onpolicy.teacher.types import CrossScorer, CrossScores, CrossTeacherScores
from onpolicy.types import PaddedBatch, Rollout


def score_cross(teacher: CrossScorer, rollout: Rollout) -> CrossScores:
    """``CrossScores`` for ``rollout`` (see the module docstring)."""
    if not rollout.prompts:
        raise DataError(
            "cross-tokenizer scoring needs the rollout's prompts (to render them with the "
            "teacher's template); pass prompts= to the backend's generate"
        )
    s_tok, t_tok = teacher.student_tokenizer, teacher.tokenizer
    s_stops = stop_token_ids(s_tok)
    t_prompts = [render_prompt(t_tok, p) for p in rollout.prompts]
    views = [
        teacher_view(t_prompts[i], c, s_tok, t_tok, s_stops)  # the prompt rendered once
        for i, c in zip(rollout.prompt_index_B, rollout.completion_ids_B, strict=True)
    ]
    prompt_ids_B = [t_prompts[i] for i in rollout.prompt_index_B]
    completion_ids_B = [v.teacher_input_ids_T[v.completion].tolist() for v in views]
    batch = PaddedBatch.from_ragged(prompt_ids_B, completion_ids_B, t_tok.pad_token_id)
    fwd = teacher.forward_teacher_tokens(batch)
    logits, targets_N, num_tokens_B = _with_room(fwd.logits_N_V), fwd.targets_N, fwd.num_tokens_B
    del fwd  # only the copy with room is kept
    token_logprobs = token_logprobs_chunked(logits, targets_N)
    matched = teacher.matched_vocab()
    spanned = sum(int((v.student_span_Ts >= 0).sum()) for v in views)
    total = sum(len(c) for c in rollout.completion_ids_B)
    cross = CrossTeacherScores(
        prompt_ids_B=prompt_ids_B,
        completion_ids_B=completion_ids_B,
        logits_Nt_V=logits,
        token_logprobs_Nt=token_logprobs,
        num_tokens_B=num_tokens_B,
        student_span_B=[v.student_span_Ts for v in views],
        teacher_span_B=[v.teacher_span_Tt for v in views],
        num_spans_B=[v.num_spans for v in views],
        vocab_size=teacher.vocab_size,
        matched_student_ids_M=matched[0],
        matched_teacher_ids_M=matched[1],
        student_tokenizer=s_tok,
        teacher_tokenizer=t_tok,
    )
    return CrossScores(
        vocab_size=teacher.vocab_size,
        num_tokens_B=[len(c) for c in rollout.completion_ids_B],
        cross=cross,
        metrics={"teacher/coverage": spanned / max(total, 1)},
    )


def _with_room(logits_N_V: torch.Tensor) -> torch.Tensor:
    """The same logits in a storage with a spare row after them: the objectives lay the rows out
    as one sequence with no copy (``onpolicy.forward.with_spare_row``)."""
    out = spare_row_empty(*logits_N_V.shape, like=logits_N_V)
    return out.copy_(logits_N_V)


def matched_vocab_pairs(student_tokenizer: Any, teacher_tokenizer: Any) -> tuple[torch.Tensor, ...]:
    """(student_ids_M, teacher_ids_M): one-to-one pairs of tokens that spell the same bytes
    (``Ġthe`` and ``▁the`` match, ``alignment.build_vocab_map``), plus the special tokens matched
    by role (end of turn <-> end of turn, ...): the stop span compares the stop probabilities
    directly."""
    from alignment import build_vocab_map

    vmap = build_vocab_map(student_tokenizer, teacher_tokenizer)
    s_ids = torch.cat([vmap.student_ids_M, vmap.student_special_P])
    t_ids = torch.cat([vmap.teacher_ids_M, vmap.teacher_special_P])
    seen_s: set[int] = set()
    seen_t: set[int] = set()
    keep = []
    for k, (a, b) in enumerate(zip(s_ids.tolist(), t_ids.tolist(), strict=True)):
        if a not in seen_s and b not in seen_t:  # one-to-one (a special may match twice)
            seen_s.add(a)
            seen_t.add(b)
            keep.append(k)
    index = torch.tensor(keep, dtype=torch.long)
    return s_ids[index], t_ids[index]

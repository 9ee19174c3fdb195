"""What flows between the parts of the cross-tokenizer layer: typed dataclasses.

Axis suffixes: ``_B`` sequences, ``_Ts`` student tokens, ``_Tt`` teacher tokens, ``_S`` spans,
``_V`` vocabulary. Span index ``-1`` marks a token that belongs to no span (zero-width special
token or padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpanAlignment:
    """The finest common segmentation of one text (or a padded batch of texts) tokenized twice.

    Span ``k`` of row ``b`` covers the same bytes on both sides; spans are numbered ``0, 1, ...`` in
    text order per row and end exactly at byte positions where both tokenizations have a token
    boundary. A span holds one or more consecutive tokens on each side.

    Attributes:
        student_span_B_Ts: int64 [B, Ts] span index of each student token, ``-1`` for zero-width
            tokens (special tokens, padding).
        teacher_span_B_Tt: int64 [B, Tt] span index of each teacher token, ``-1`` likewise.
        num_spans_B: int64 [B] number of spans per row (span indices run ``0 .. num_spans_B[b]-1``).
    """

    student_span_B_Ts: torch.Tensor
    teacher_span_B_Tt: torch.Tensor
    num_spans_B: torch.Tensor

    def one_to_one_B(self) -> torch.Tensor:
        """float [B] share of spans of one token on each side (1.0 for a row without spans)."""
        return _one_to_one(self.student_span_B_Ts, self.teacher_span_B_Tt, self.num_spans_B)


def _tokens_per_span(span_B_T: torch.Tensor, S: int) -> torch.Tensor:
    """int64 [B, S] number of tokens in each span (flattened segment count, no loop)."""
    B = span_B_T.shape[0]
    counts = torch.zeros(B, S + 1, dtype=torch.long)
    idx = torch.where(span_B_T >= 0, span_B_T, S)  # -1 -> dump column S
    counts.scatter_add_(1, idx, torch.ones_like(idx))
    return counts[:, :S]


def _one_to_one(
    a_B_T: torch.Tensor, b_B_T: torch.Tensor, num_spans_B: torch.Tensor
) -> torch.Tensor:
    S = int(num_spans_B.max()) if num_spans_B.numel() else 0
    both = (_tokens_per_span(a_B_T, S) == 1) & (_tokens_per_span(b_B_T, S) == 1)
    ones = both.sum(1).to(torch.float64)
    return torch.where(num_spans_B > 0, ones / num_spans_B.clamp(min=1), 1.0)


@dataclass(frozen=True)
class SideLogits:
    """One model's view of a batch for the cross-tokenizer losses (``alignment.spans.gold``).

    Attributes:
        logits_B_T_V: [B, T, V] the model's logits on its own tokens; ``logits[:, t]`` predicts
            token ``t + 1``. Any float dtype (computed in float32 or float64).
        input_ids_B_T: int64 [B, T] the tokens (prompt + completion, padded).
        span_B_T: int64 [B, T] span of each token (``-1``: prompt, padding, zero-width tokens).
            Token 0 must be ``-1`` (nothing predicts it).
        temperature: softmax temperature for this side.
    """

    logits_B_T_V: torch.Tensor
    input_ids_B_T: torch.Tensor
    span_B_T: torch.Tensor
    temperature: float = 1.0


@dataclass(frozen=True)
class SpanLossTerms:
    """Per-span parts of the GOLD-style loss, before weighting (zero where ``mask_B_S`` is False).

    Attributes:
        matched_B_S: generalized JSD between the span distributions restricted to matched
            vocabulary pairs (0 when no pairs are given).
        unmatched_B_S: ULD between the rest of the two span distributions.
        mask_B_S: bool, True for spans with tokens on both sides.
    """

    matched_B_S: torch.Tensor
    unmatched_B_S: torch.Tensor
    mask_B_S: torch.Tensor

    def weighted(self, matched_weight: float, unmatched_weight: float) -> torch.Tensor:
        """[B, S] ``matched_weight * matched + unmatched_weight * unmatched`` per span."""
        return matched_weight * self.matched_B_S + unmatched_weight * self.unmatched_B_S


@dataclass(frozen=True)
class VocabMap:
    """Tokens of two vocabularies that stand for the same bytes (``Ġthe``, ``▁the`` -> b" the").

    Attributes:
        student_ids_M: int64 [M] student ids of the matched non-special tokens.
        teacher_ids_M: int64 [M] teacher ids, pairwise with ``student_ids_M`` (one-to-one: when a
            vocabulary holds several ids with the same bytes, the non-byte-fallback one with the
            lowest id represents them).
        special_roles: role of each matched special pair (``bos``, ``eos``, ``end_of_turn``, ...,
            or ``content`` for specials with the same text on both sides).
        student_special_P: int64 [P] student ids of those pairs.
        teacher_special_P: int64 [P] teacher ids of those pairs.
        student_vocab_size: the student tokenizer's size (ids below it); logits may be padded wider.
        teacher_vocab_size: the teacher tokenizer's size.
    """

    student_ids_M: torch.Tensor
    teacher_ids_M: torch.Tensor
    special_roles: tuple[str, ...]
    student_special_P: torch.Tensor
    teacher_special_P: torch.Tensor
    student_vocab_size: int
    teacher_vocab_size: int


@dataclass(frozen=True)
class TeacherView:
    """The teacher's input for one student sample, and the alignment of the completion tokens.

    Attributes:
        teacher_input_ids_T: int64 [T] teacher prompt (the teacher's chat template and tokenizer)
            followed by the completion's bytes tokenized by the teacher, then the teacher's
            end-of-turn token if the student stopped.
        completion: slice of ``teacher_input_ids_T`` holding the completion tokens (end-of-turn
            included); logits at ``completion.start - 1 ...`` predict them.
        student_span_Ts: int64 [Ts] span per student completion token (``-1``: zero-width special).
        teacher_span_Tt: int64 [Tt] span per teacher completion token, ``Tt = len(completion)``.
        num_spans: number of spans; when the student stopped, the last span ``num_spans - 1`` holds
            only the two stop tokens (student EOS/end-of-turn <-> teacher end-of-turn, matched by
            role, zero bytes).
        stopped: the student's completion ended with one of its stop tokens.
    """

    teacher_input_ids_T: torch.Tensor
    completion: slice
    student_span_Ts: torch.Tensor
    teacher_span_Tt: torch.Tensor
    num_spans: int
    stopped: bool

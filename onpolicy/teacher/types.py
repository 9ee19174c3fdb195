"""What a teacher returns for a rollout: ``TeacherScores``.

Same tokenizer: values at the rollout's *packed completion positions* (see ``onpolicy.forward``: the
``N`` positions whose next token is a completion token, row-major). Different tokenizers: the
teacher's log-probabilities on its own tokenization of the same conversation (rendered with its own
chat template) and, per row, the span alignment between the student's and the teacher's completion
tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from onpolicy.losses.chunked import LMHead

TeacherMode = Literal["same", "cross"]


class CrossScorer(Protocol):
    """What cross-tokenizer scoring (``onpolicy.teacher.cross.score_cross``) needs of a teacher
    (``LocalTeacher`` is one): its tokenizer, the student's, its vocabulary size, a forward on its
    own tokens and the matched vocabulary pairs."""

    tokenizer: Any
    student_tokenizer: Any
    vocab_size: int

    def forward_teacher_tokens(self, batch: Any) -> Any: ...

    def matched_vocab(self) -> tuple[torch.Tensor, ...]: ...


@dataclass
class CrossTeacherScores:
    """The teacher's view when its tokenizer differs from the student's.

    Attributes:
        prompt_ids_B: the teacher's rendering of each row's prompt (its own chat template).
        completion_ids_B: the teacher's tokenization of each completion's bytes (+ its own end of
            turn when the student stopped with its end-of-turn/EOS token).
        logits_Nt_V: teacher logits predicting each teacher completion token, packed row-major
            (``Nt = sum(len(c) for c in completion_ids_B)``), vocab sliced to the teacher tokenizer.
        token_logprobs_Nt: float32 teacher log-probability of each of its completion tokens.
        num_tokens_B: teacher completion tokens per row.
        student_span_B: per row, int64 ``[Ts]`` span of each *student* completion token (``-1``:
            in no span, e.g. a special token, or bytes that are not valid UTF-8).
        teacher_span_B: per row, int64 ``[Tt]`` span of each teacher completion token.
        num_spans_B: spans per row. Span ``k`` covers the same completion bytes on both sides; the
            student's stop token and the teacher's end of turn form the last span when both stop.
        vocab_size: the teacher tokenizer's size.
        matched_student_ids_M, matched_teacher_ids_M: vocabulary pairs spelling the same bytes
            (for the GOLD-style loss).
        student_tokenizer, teacher_tokenizer: the two tokenizers (byte tables of the next-byte
            and prefix-marginal losses); None when the scorer did not attach them.
        layer_hidden_L_Nt_D: the teacher's intermediate hidden states *at* each of its
            completion tokens (the state that has read the token), packed row-major, one row
            per layer asked for (``LocalTeacher(hidden_layers=...)``; cross-tokenizer hidden-state
            distillation, ``onpolicy.hidden.cross``), else None.
    """

    prompt_ids_B: list[list[int]]
    completion_ids_B: list[list[int]]
    logits_Nt_V: torch.Tensor
    token_logprobs_Nt: torch.Tensor
    num_tokens_B: list[int]
    student_span_B: list[torch.Tensor]
    teacher_span_B: list[torch.Tensor]
    num_spans_B: list[int]
    vocab_size: int
    matched_student_ids_M: torch.Tensor
    matched_teacher_ids_M: torch.Tensor
    student_tokenizer: Any = None
    teacher_tokenizer: Any = None
    layer_hidden_L_Nt_D: torch.Tensor | None = None


@dataclass
class TeacherScores:
    """A teacher's scores for one ``Rollout`` (computed without gradients).

    Attributes:
        mode: ``same`` (shared tokenizer, fields below at the student's completion positions) or
            ``cross`` (see ``cross``).
        vocab_size: ``V``, the shared tokenizer's size (padded embedding rows are sliced away).
        logits_N_V: teacher logits predicting each completion token (``same``; None when the
            teacher returned hidden states for the chunked loss).
        hidden_N_D: the teacher's final hidden states at those positions (chunked loss).
        lm_head: the teacher's output head sliced to ``V`` (an ``onpolicy.losses.LMHead``; chunked
            loss).
        token_logprobs_N: the teacher's log-probability (temperature 1, full vocabulary) of the
            completion token at each position: the sampled-token signal (``same`` only).
        num_tokens_B: completion tokens per row (``sum == N``).
        topk_ids_N_K, topk_logprobs_N_K, tail_logprob_N: a sparse teacher (``same``): its top-k
            token ids and float32 log-probabilities per position (temperature 1) and the log of
            the remaining mass (``LocalTeacher(top_k=K)`` or a vLLM teacher); ``logits_N_V`` is
            then None.
        cross: the cross-tokenizer view (``mode == "cross"``), else None.
        layer_hidden_L_N_D: the teacher's intermediate hidden states at those positions, one
            row per layer it was asked for (``LocalTeacher(hidden_layers=...)``, ``same`` only;
            hidden-state distillation, ``onpolicy.hidden``), else None.
        metrics: plain floats (e.g. seconds, alignment coverage).
    """

    mode: TeacherMode
    vocab_size: int
    num_tokens_B: list[int]
    token_logprobs_N: torch.Tensor | None = None
    logits_N_V: torch.Tensor | None = None
    hidden_N_D: torch.Tensor | None = None
    lm_head: LMHead | None = None
    topk_ids_N_K: torch.Tensor | None = None
    topk_logprobs_N_K: torch.Tensor | None = None
    tail_logprob_N: torch.Tensor | None = None
    cross: CrossTeacherScores | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    layer_hidden_L_N_D: torch.Tensor | None = None

    def dense_logits(self) -> torch.Tensor:
        """float32 ``[N, V]`` teacher logits (projected from hidden states if that is what it
        holds; for metrics and tests, the chunked loss never calls this)."""
        if self.logits_N_V is not None:
            return self.logits_N_V.float()
        if self.hidden_N_D is None or self.lm_head is None:
            raise ValueError("these teacher scores hold no same-tokenizer logits (mode=cross?)")
        from onpolicy.forward import head_logits

        return head_logits(self.hidden_N_D, self.lm_head)

    @property
    def lm_head_V_D(self) -> torch.Tensor | None:
        """The head's weight ``[V, D]`` (kept for callers of the first API; prefer ``lm_head``)."""
        return None if self.lm_head is None else self.lm_head.weight

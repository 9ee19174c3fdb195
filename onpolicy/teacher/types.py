"""What a teacher returns for a rollout: ``TeacherScores``, one of five typed variants
(``DenseScores``, ``HiddenScores``, ``TopKScores``, ``TokenScores``, ``CrossScores``).

Same tokenizer: values at the rollout's *packed completion positions* (see ``onpolicy.forward``: the
``N`` positions whose next token is a completion token, row-major). Different tokenizers: the
teacher's log-probabilities on its own tokenization of the same conversation (rendered with its own
chat template) and, per row, the span alignment between the student's and the teacher's completion
tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

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


@dataclass(kw_only=True)
class TeacherScores:
    """A teacher's scores for one ``Rollout`` (computed without gradients): one of the typed
    variants below, never this class itself. Each has one ``dense_logits`` and one
    ``token_logprobs`` path; an objective declares the variant it needs
    (``onpolicy.objectives.base.teacher_output``: ``logits`` -> ``DenseScores`` or, from a top-k
    teacher, ``TopKScores``; ``hidden`` -> ``HiddenScores``; ``token`` -> any same-tokenizer
    variant) and a teacher in ``cross`` mode returns ``CrossScores``.

    Attributes (every variant):
        vocab_size: ``V``, the (teacher) tokenizer's size (padded embedding rows are sliced away).
        num_tokens_B: the student's completion tokens per row (``sum == N``).
        token_logprobs_N: float32 ``[N]`` the teacher's log-probability (temperature 1, full
            vocabulary) of the completion token at each position: the sampled-token signal
            (same tokenizer; None for ``CrossScores`` and for ``HiddenScores`` from a teacher told
            to skip them).
        layer_hidden_L_N_D: the teacher's intermediate hidden states at those positions, one
            row per layer it was asked for (``LocalTeacher(hidden_layers=...)``, same tokenizer
            only; hidden-state distillation, ``onpolicy.hidden``), else None.
        metrics: plain floats (e.g. seconds, alignment coverage).
    """

    mode: ClassVar[TeacherMode] = "same"
    vocab_size: int
    num_tokens_B: list[int]
    token_logprobs_N: torch.Tensor | None = None
    layer_hidden_L_N_D: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if type(self) is TeacherScores:
            raise TypeError(
                "TeacherScores is the common base; build DenseScores, HiddenScores, TopKScores, "
                "TokenScores or CrossScores"
            )

    def dense_logits(self) -> torch.Tensor:
        """float32 ``[N, V]`` teacher logits at the student's completion positions (for metrics
        and tests; a chunked loss never calls this). Only ``DenseScores`` and ``HiddenScores``
        hold them; the others raise."""
        raise ValueError(
            f"{type(self).__name__} hold no full teacher distribution on the student's "
            "positions; use a teacher with top_k: 0 and the student's tokenizer"
        )

    def token_logprobs(self, targets_N: torch.Tensor | None = None) -> torch.Tensor:
        """float32 ``[N]`` the teacher's log-probability of each completion token (``targets_N``:
        the completion tokens, used only by a variant that computes them on demand)."""
        if self.token_logprobs_N is None:
            raise ValueError(f"{type(self).__name__} hold no token log-probabilities")
        return self.token_logprobs_N


@dataclass(kw_only=True)
class DenseScores(TeacherScores):
    """Same tokenizer, full logits. ``logits_N_V``: teacher logits predicting each completion
    token (vocabulary sliced to ``V``)."""

    logits_N_V: torch.Tensor

    def dense_logits(self) -> torch.Tensor:
        return self.logits_N_V.float()

    def token_logprobs(self, targets_N: torch.Tensor | None = None) -> torch.Tensor:
        if self.token_logprobs_N is None and targets_N is not None:
            from onpolicy.losses import token_logprobs

            return token_logprobs(self.logits_N_V, targets_N)
        return super().token_logprobs(targets_N)


@dataclass(kw_only=True)
class HiddenScores(TeacherScores):
    """Same tokenizer, the teacher's final hidden states ``hidden_N_D`` at the completion
    positions and its output head ``lm_head`` (an ``onpolicy.losses.LMHead`` sliced to ``V``:
    bias, logit scale and softcap included): a chunked divergence projects them a block at a
    time, so ``[N, V]`` never exists at once."""

    hidden_N_D: torch.Tensor
    lm_head: LMHead

    def dense_logits(self) -> torch.Tensor:
        from onpolicy.forward import head_logits

        return head_logits(self.hidden_N_D, self.lm_head)

    def token_logprobs(self, targets_N: torch.Tensor | None = None) -> torch.Tensor:
        if self.token_logprobs_N is None and targets_N is not None:
            return head_token_logprobs(self.hidden_N_D, self.lm_head, targets_N)
        return super().token_logprobs(targets_N)


@dataclass(kw_only=True)
class TopKScores(TeacherScores):
    """Same tokenizer, a sparse teacher (``LocalTeacher(top_k=K)``, a vLLM teacher, cached
    scores): per position its top-k token ids ``topk_ids_N_K`` and float32 log-probabilities
    ``topk_logprobs_N_K`` (temperature 1) and the log of the remaining mass ``tail_logprob_N``;
    ``token_logprobs_N`` is always set."""

    topk_ids_N_K: torch.Tensor
    topk_logprobs_N_K: torch.Tensor
    tail_logprob_N: torch.Tensor

    def __post_init__(self) -> None:
        _require_token_logprobs(self)


@dataclass(kw_only=True)
class TokenScores(TeacherScores):
    """Same tokenizer, only ``token_logprobs_N`` (the sampled-token objective's need; a served
    teacher asked for no top-k)."""

    def __post_init__(self) -> None:
        _require_token_logprobs(self)


@dataclass(kw_only=True)
class CrossScores(TeacherScores):
    """Different tokenizers: ``cross``, the teacher's view of the same conversation on its own
    tokens and the span alignment (``CrossTeacherScores``); ``token_logprobs_N`` is None (the
    teacher's are ``cross.token_logprobs_Nt``, on its own tokens)."""

    mode: ClassVar[TeacherMode] = "cross"
    cross: CrossTeacherScores


def _require_token_logprobs(scores: TeacherScores) -> None:
    if scores.token_logprobs_N is None:
        raise ValueError(f"{type(scores).__name__} needs token_logprobs_N")


def head_token_logprobs(
    hidden_N_D: torch.Tensor, head: LMHead, targets_N: torch.Tensor, block: int = 512
) -> torch.Tensor:
    """float32 ``[N]`` ``token_logprobs`` of ``head_logits(hidden_N_D, head)``, ``block``
    positions at a time (``[N, V]`` never exists at once)."""
    from onpolicy.forward import head_logits
    from onpolicy.losses import token_logprobs

    out = [
        token_logprobs(head_logits(h, head), t)
        for h, t in zip(hidden_N_D.split(block), targets_N.split(block), strict=True)
    ]
    return torch.cat(out) if out else torch.zeros(0, device=targets_N.device)

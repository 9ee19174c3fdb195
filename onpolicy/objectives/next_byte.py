"""The ``next_byte`` objective: on-policy distillation across tokenizers on next-byte marginals.

At every byte of the student's completion (``alignment.byte_marginal``) each model's next-token
distribution is projected onto the next byte: exactly where the model is at a token boundary (for
both at every span start, and at the stop), and as the within-token conditional (the tokens that
extend the bytes already written) inside a token. The two 257-class distributions (256 bytes + a
stop class) are compared with the generalized JSD (``beta``; bounded for ``0 < beta < 1``, so
positions where the student went off-track cannot dominate). No vocabulary map is needed and the
comparison is independent of how either side splits the text.

Counted units (``LossOutput.num_tokens``) are the compared byte positions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from onpolicy.errors import ConfigError
from onpolicy.objectives.base import BatchSource, LossOutput, register_objective
from onpolicy.objectives.common import check_temperature, check_unit
from onpolicy.objectives.cross import cross_sides
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("next_byte")
@dataclass
class NextByte:
    """Generalized JSD between next-byte distributions on the student's own samples.

    Attributes:
        beta: generalized JSD coefficient (0 = forward KL(teacher||student), 1 = reverse KL;
            0.5 by default: bounded per position).
        within_tokens: also compare inside tokens (the within-token conditional); False keeps the
            positions where both sides are at a token boundary (exact marginals only).
        temperature: softmax temperature of both sides (``teacher_temperature`` overrides the
            teacher's).
        reference_kl: weight of KL(student || reference) summed over the completion tokens, the
            reference being the student's weights at its first loss call (a frozen copy): keeps
            the student's token-level choices, its tokenization included, near the model it was
            trained as (a byte-level target cannot tell two tokenizations of a text apart).
    """

    beta: float = 0.5
    within_tokens: bool = True
    temperature: float = 1.0
    teacher_temperature: float | None = None
    reference_kl: float = 0.0
    _reference: Any = field(default=None, init=False, repr=False, compare=False)

    name: ClassVar[str] = "next_byte"
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_unit("beta", self.beta)
        check_temperature(self.temperature)

    def batch_source(self, step: int) -> BatchSource:
        return "student"

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        from alignment.byte_loss import next_byte_terms
        from alignment.byte_marginal import byte_trie

        s_side, t_side, cross = cross_sides(
            student, rollout, teacher_scores, self.name, self.temperature, self.teacher_temperature
        )
        if cross.student_tokenizer is None or cross.teacher_tokenizer is None:
            raise ConfigError(
                "objective 'next_byte' needs the tokenizers in the cross scores; score with "
                "onpolicy.teacher.LocalTeacher (mode cross)"
            )
        s_trie = byte_trie(cross.student_tokenizer, s_side.logits_B_T_V.shape[-1])
        t_trie = byte_trie(cross.teacher_tokenizer, t_side.logits_B_T_V.shape[-1])
        terms = next_byte_terms(s_side, t_side, s_trie, t_trie, self.beta, self.within_tokens)
        loss_sum = terms.divergence_E.sum()
        n = int(terms.divergence_E.shape[0])
        ref_kl = self._reference_kl(student, rollout, s_side, cross) if self.reference_kl else None
        if ref_kl is not None:
            loss_sum = loss_sum + self.reference_kl * ref_kl
        metrics = {
            "next_byte/divergence_sum": float(loss_sum.detach()),
            "next_byte/exact_share": float(terms.exact_E.float().mean()) if n else 0.0,
        }
        if ref_kl is not None:
            metrics["next_byte/reference_kl_sum"] = float(ref_kl.detach())
        return LossOutput(loss_sum=loss_sum, num_tokens=n, metrics=metrics)

    def _reference_kl(self, student, rollout: Rollout, s_side, cross) -> torch.Tensor:
        """KL(student || reference) summed over the completion tokens (padded rows of the
        windows hold zero logits on both sides and add 0)."""
        from onpolicy.objectives.common import student_forward
        from onpolicy.objectives.cross import side_window

        if self._reference is None:
            base = getattr(student, "module", student)
            self._reference = copy.deepcopy(base).eval().requires_grad_(False)
        with torch.no_grad():
            fwd = student_forward(self._reference, rollout, None)
            ref = side_window(
                fwd.logits_N_V, fwd.num_tokens_B, [p[-1] for p in rollout.prompt_ids_B],
                rollout.completion_ids_B, cross.student_span_B, s_side.temperature,
            )  # fmt: skip
            log_r = torch.log_softmax(ref.logits_B_T_V.float() / s_side.temperature, -1)
        log_s = torch.log_softmax(s_side.logits_B_T_V.float() / s_side.temperature, -1)
        return (log_s.exp() * (log_s - log_r)).sum()

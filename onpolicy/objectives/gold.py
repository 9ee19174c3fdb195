"""The ``gold`` objective: on-policy distillation across tokenizers, GOLD-style.

Per aligned span (``onpolicy.teacher.cross``), the student's and the teacher's span distributions
are compared: on the vocabulary pairs that spell the same bytes with a generalized JSD (``beta``),
on the rest with ULD (sorted-probability L1); see ``alignment.gold``. Counted units are the spans
with tokens on both sides (``LossOutput.num_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from onpolicy.objectives.base import BatchSource, LossOutput, register_objective
from onpolicy.objectives.common import check_temperature, check_unit
from onpolicy.objectives.cross import cross_sides
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("gold")
@dataclass
class GOLD:
    """GOLD-style hybrid loss on the student's own samples.

    Attributes:
        beta: generalized JSD coefficient on matched tokens (1 = reverse KL, 0 = forward KL).
        matched_weight, unmatched_weight: weights of the matched (JSD) and unmatched (ULD) terms.
        temperature: softmax temperature of both sides (``teacher_temperature`` overrides the
            teacher's).
        top_k: compare only the top ``k`` unmatched probabilities exactly (memory), None = all.
    """

    beta: float = 1.0
    matched_weight: float = 1.0
    unmatched_weight: float = 1.0
    temperature: float = 1.0
    teacher_temperature: float | None = None
    top_k: int | None = None

    name: ClassVar[str] = "gold"
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_unit("beta", self.beta)
        check_temperature(self.temperature)

    def batch_source(self, step: int) -> BatchSource:
        return "student"

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        from alignment.gold import gold_terms

        s_side, t_side, cross = cross_sides(
            student, rollout, teacher_scores, self.name, self.temperature, self.teacher_temperature
        )
        device = s_side.logits_B_T_V.device
        terms = gold_terms(
            s_side, t_side, cross.matched_student_ids_M.to(device),
            cross.matched_teacher_ids_M.to(device), self.beta, top_k=self.top_k,
        )  # fmt: skip
        mask = terms.mask_B_S
        matched = terms.matched_B_S[mask].sum()
        unmatched = terms.unmatched_B_S[mask].sum()
        loss_sum = self.matched_weight * matched + self.unmatched_weight * unmatched
        metrics = {
            "gold/matched_sum": float(matched.detach()),
            "gold/unmatched_sum": float(unmatched.detach()),
        }
        return LossOutput(loss_sum=loss_sum, num_tokens=int(mask.sum()), metrics=metrics)

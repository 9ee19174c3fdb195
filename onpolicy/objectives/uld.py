"""The ``uld`` objective: on-policy distillation across tokenizers with the Universal Logit
Distillation loss (sorted-probability L1 between span distributions, no vocabulary map).
Counted units are the spans with tokens on both sides (``LossOutput.num_tokens``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from onpolicy.objectives.base import BatchSource, LossOutput, register_objective
from onpolicy.objectives.common import check_temperature
from onpolicy.objectives.cross import cross_sides
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("uld")
@dataclass
class ULD:
    """ULD between the student's and the teacher's span distributions on the student's samples
    (``temperature`` both sides unless ``teacher_temperature``; ``top_k`` bounds memory)."""

    temperature: float = 1.0
    teacher_temperature: float | None = None
    top_k: int | None = None

    name: ClassVar[str] = "uld"
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_temperature(self.temperature)

    def batch_source(self, step: int) -> BatchSource:
        return "student"

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        from alignment.gold import gold_terms

        s_side, t_side, _ = cross_sides(
            student, rollout, teacher_scores, self.name, self.temperature, self.teacher_temperature
        )
        terms = gold_terms(s_side, t_side, None, None, top_k=self.top_k)
        loss_sum = terms.unmatched_B_S[terms.mask_B_S].sum()
        return LossOutput(
            loss_sum=loss_sum,
            num_tokens=int(terms.mask_B_S.sum()),
            metrics={"uld_sum": float(loss_sum.detach())},
        )

"""The ``uld`` objective: on-policy distillation across tokenizers with the Universal Logit
Distillation loss (sorted-probability L1 between span distributions, no vocabulary map).
Counted units are the spans with tokens on both sides (``LossOutput.num_tokens``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from onpolicy.objectives.base import LossOutput, register_objective
from onpolicy.objectives.common import check_temperature
from onpolicy.objectives.cross import AnchoredCrossObjective, cross_sides
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("uld")
@dataclass
class ULD(AnchoredCrossObjective):
    """ULD between the student's and the teacher's span distributions on the student's samples
    (``temperature`` both sides unless ``teacher_temperature``; ``top_k`` bounds memory;
    ``reference_kl``: weight of KL(student || the initial student) on its tokens,
    ``onpolicy.objectives.reference.FrozenReference``, 0 turns it off)."""

    temperature: float = 1.0
    teacher_temperature: float | None = None
    top_k: int | None = None
    reference_kl: float = 1.0

    name: ClassVar[str] = "uld"

    def __post_init__(self) -> None:
        check_temperature(self.temperature)

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        from alignment import gold_terms

        s_side, t_side, cross = cross_sides(
            student, rollout, teacher_scores, self.name, self.temperature, self.teacher_temperature
        )
        terms = gold_terms(s_side, t_side, None, None, top_k=self.top_k)
        loss_sum = terms.unmatched_B_S[terms.mask_B_S].sum()
        metrics = {"uld_sum": float(loss_sum.detach())}
        loss_sum, anchor = self._reference.add_to(
            self.reference_kl, loss_sum, student, rollout, s_side, cross, self.name
        )
        metrics.update(anchor)
        return LossOutput(loss_sum=loss_sum, num_tokens=int(terms.mask_B_S.sum()), metrics=metrics)

"""The ``supervised_kd`` objective: forward KL to the teacher on fixed completions (baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from onpolicy.objectives.base import BatchSource, LossOutput, register_objective
from onpolicy.objectives.common import check_temperature, check_unit
from onpolicy.objectives.divergence import divergence_loss
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("supervised_kd")
@dataclass
class SupervisedKD:
    """Off-policy baseline: forward KL(teacher || student) (``beta=0``) on a dataset's fixed
    completions, the teacher scoring every position (word-level KD on ground-truth text)."""

    beta: float = 0.0
    temperature: float = 1.0
    chunked: bool = False

    name: ClassVar[str] = "supervised_kd"
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_unit("beta", self.beta)
        check_temperature(self.temperature)

    def batch_source(self, step: int) -> BatchSource:
        return "dataset"

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        return divergence_loss(
            student, rollout, teacher_scores, self.beta, self.temperature, self.chunked, self.name
        )

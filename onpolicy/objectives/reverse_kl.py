"""The ``reverse_kl`` objective: on-policy distillation, generalized JSD (reverse KL by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from onpolicy.objectives.base import BatchSource, LossOutput, TeacherOutput, register_objective
from onpolicy.objectives.common import check_temperature, check_unit, topk_temperature_limit
from onpolicy.objectives.divergence import divergence_loss
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("reverse_kl")
@dataclass
class ReverseKL:
    """On-policy distillation: the student's own samples, scored by the teacher; generalized JSD
    (``beta=1``: reverse KL, the default) at temperature ``temperature``."""

    beta: float = 1.0
    temperature: float = 1.0
    chunked: bool = False

    name: ClassVar[str] = "reverse_kl"
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_unit("beta", self.beta)
        check_temperature(self.temperature)

    def batch_source(self, step: int) -> BatchSource:
        return "student"

    def teacher_output(self) -> TeacherOutput:
        """``hidden`` with ``chunked`` (the chunked divergence), else ``logits``."""
        return "hidden" if self.chunked else "logits"

    def topk_teacher_limit(self) -> str | None:
        """A top-k teacher serves ``temperature`` 1 only."""
        return topk_temperature_limit(self.temperature)

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        return divergence_loss(
            student, rollout, teacher_scores, self.beta, self.temperature, self.chunked, self.name
        )

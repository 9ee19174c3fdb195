"""The ``supervised_kd`` objective: forward KL to the teacher on fixed completions (baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from onpolicy.objectives.base import BatchSource, LossOutput, register_objective
from onpolicy.objectives.common import check_temperature, check_unit
from onpolicy.objectives.divergence import divergence_loss
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("supervised_kd")
@dataclass
class SupervisedKD:
    """Off-policy baseline: forward KL(teacher || student) (``beta=0``) on fixed completions, the
    teacher scoring every position (word-level KD). ``source``: the dataset's completions
    (``dataset``, ground-truth text) or the teacher's samples (``teacher``; with
    ``teacher.samples=fixed``, one sample per prompt drawn once)."""

    beta: float = 0.0
    temperature: float = 1.0
    chunked: bool = False
    source: Literal["dataset", "teacher"] = "dataset"

    name: ClassVar[str] = "supervised_kd"
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_unit("beta", self.beta)
        check_temperature(self.temperature)
        if self.source not in ("dataset", "teacher"):
            from onpolicy.errors import ConfigError

            raise ConfigError(f"supervised_kd source={self.source!r}; use 'dataset' or 'teacher'")

    def batch_source(self, step: int) -> BatchSource:
        return self.source

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        return divergence_loss(
            student, rollout, teacher_scores, self.beta, self.temperature, self.chunked, self.name
        )

"""The ``gkd`` objective: generalized knowledge distillation, on-policy share ``lmbda`` per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from onpolicy.objectives.base import BatchSource, LossOutput, TeacherOutput, register_objective
from onpolicy.objectives.common import (
    check_temperature,
    check_unit,
    on_policy_share,
    topk_temperature_limit,
)
from onpolicy.objectives.divergence import divergence_loss
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("gkd")
@dataclass
class GKD:
    """Generalized knowledge distillation (Agarwal et al. 2024): each optimizer step is on-policy
    (student samples) with probability ``lmbda``, decided from an RNG seeded by (``seed``, step) so
    all processes agree; otherwise off-policy: ``off_policy="dataset"`` completions or
    ``"teacher"`` samples. Loss: generalized JSD with ``beta`` at ``temperature``."""

    lmbda: float = 0.5
    beta: float = 0.5
    temperature: float = 1.0
    off_policy: Literal["dataset", "teacher"] = "dataset"
    seed: int = 0
    chunked: bool = False

    name: ClassVar[str] = "gkd"
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_unit("lmbda", self.lmbda)
        check_unit("beta", self.beta)
        check_temperature(self.temperature)
        if self.off_policy not in ("dataset", "teacher"):
            from onpolicy.errors import ConfigError

            raise ConfigError(f"gkd off_policy={self.off_policy!r}; use 'dataset' or 'teacher'")

    def batch_source(self, step: int) -> BatchSource:
        return "student" if on_policy_share(self.seed, step, self.lmbda) else self.off_policy

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

"""The ``sft`` objective: next-token NLL on fixed completions, the teacher's samples (sequence-level
KD) or the dataset's own gold completions (gold-data SFT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from onpolicy.errors import ConfigError
from onpolicy.objectives.base import BatchSource, LossOutput, register_objective
from onpolicy.objectives.common import student_forward
from onpolicy.types import Rollout


@register_objective("sft")
@dataclass
class SFT:
    """Supervised fine-tuning on completions the student did not sample; no teacher scores.

    ``source``: ``teacher`` (the off-policy baseline, sequence-level KD, Kim & Rush 2016: the
    teacher samples completions, fresh or ``teacher.samples=fixed``) or ``dataset`` (the rows' gold
    ``completion``: train a teacher, or warm a student before on-policy distillation; no teacher
    model needed). Either way a completion that ended carries the student's end-of-turn (or EOS)
    token, so the student learns to stop (``trainer.sources``).

    Loss: ``-sum log p_student(token)`` over completion tokens only (prompt tokens are context,
    never targets), cross-entropy in float32.
    """

    source: Literal["teacher", "dataset"] = "teacher"

    name: ClassVar[str] = "sft"
    needs_teacher: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.source not in ("teacher", "dataset"):
            raise ConfigError(f"sft source={self.source!r}; use 'teacher' or 'dataset'")

    def batch_source(self, step: int) -> BatchSource:
        return self.source

    def loss(self, student, rollout: Rollout, teacher_scores: object = None) -> LossOutput:
        fwd = student_forward(student, rollout, None)
        loss_sum = torch.nn.functional.cross_entropy(
            fwd.logits_N_V.float(), fwd.targets_N, reduction="sum"
        )
        n = int(fwd.targets_N.numel())
        return LossOutput(
            loss_sum=loss_sum, num_tokens=n, metrics={"nll_sum": float(loss_sum.detach())}
        )

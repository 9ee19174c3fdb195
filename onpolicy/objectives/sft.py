"""The ``sft`` objective: sequence-level KD, next-token NLL on teacher-generated samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from onpolicy.objectives.base import BatchSource, LossOutput, register_objective
from onpolicy.objectives.common import student_forward
from onpolicy.types import Rollout


@register_objective("sft")
@dataclass
class SFT:
    """Off-policy baseline (sequence-level KD, Kim & Rush 2016): the teacher samples completions
    (``batch_source == "teacher"``), the student maximizes their likelihood. No teacher scores.

    Loss: ``-sum log p_student(token)`` over completion tokens (cross-entropy in float32).
    """

    name: ClassVar[str] = "sft"
    needs_teacher: ClassVar[bool] = False

    def batch_source(self, step: int) -> BatchSource:
        return "teacher"

    def loss(self, student, rollout: Rollout, teacher_scores: object = None) -> LossOutput:
        fwd = student_forward(student, rollout, None)
        loss_sum = torch.nn.functional.cross_entropy(
            fwd.logits_N_V.float(), fwd.targets_N, reduction="sum"
        )
        n = int(fwd.targets_N.numel())
        return LossOutput(
            loss_sum=loss_sum, num_tokens=n, metrics={"nll_sum": float(loss_sum.detach())}
        )

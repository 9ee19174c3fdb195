"""``WithHidden``: any same-tokenizer objective plus a hidden-state distillation term.

    loss_sum = objective.loss_sum + weight * sum_n d_n

``d_n`` (``onpolicy.losses.hidden.hidden_distance``) compares, at each packed completion position
``n`` the objective counts, the student's hidden states at the map's student layers (through the
trained ``HiddenProjection``) with the teacher's at the paired layers
(``TeacherScores.layer_hidden_L_N_D``). The sum is added to the objective's SUM before the
trainer's one division by the global count of completion tokens, so the term's scale does not
change with micro-batching, gradient accumulation or the process count. The student's hidden
states come from the objective's own forward (``capture_hidden_states``): no extra pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from onpolicy.errors import ConfigError
from onpolicy.forward import completion_positions
from onpolicy.hidden.layers import LayerPairs, capture_hidden_states, pack_layers
from onpolicy.losses.hidden import HiddenLoss, hidden_distance
from onpolicy.objectives.base import (
    BatchSource,
    LossOutput,
    TeacherOutput,
    teacher_output,
    topk_teacher_limit,
)
from onpolicy.objectives.common import PAD_ID
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


def hidden_term(
    student_L_N_Ds: torch.Tensor,
    teacher_L_N_Dt: torch.Tensor,
    projection: torch.nn.Module,
    kind: HiddenLoss,
) -> torch.Tensor:
    """``sum_n d_n``: the student's states ``[L, N, Ds]`` through ``projection`` (to ``[L, N,
    Dt]``) against the teacher's ``[L, N, Dt]`` (detached), a float32 scalar with gradients to
    the student and the projection."""
    projected_L_N_Dt = projection(student_L_N_Ds)
    teacher = teacher_L_N_Dt.to(projected_L_N_Dt.device).detach()
    return hidden_distance(projected_L_N_Dt, teacher, kind).sum()


@dataclass
class WithHidden:
    """``inner`` (a registered same-tokenizer objective) + ``weight`` times the hidden term.

    Attributes:
        inner: the logit objective; its batch source and teacher output are this one's.
        pairs: ``(student, teacher)`` hidden-state indices (``onpolicy.hidden.layers``).
        weight: the term's weight (> 0).
        kind: ``mse`` or ``cosine``.
        projection: the (possibly DDP-wrapped) ``HiddenProjection``.
    """

    inner: Any
    pairs: LayerPairs
    weight: float
    kind: HiddenLoss
    projection: torch.nn.Module

    needs_teacher = True  # the teacher's hidden states, even under a teacher-free objective

    @property
    def name(self) -> str:
        return self.inner.name

    def batch_source(self, step: int) -> BatchSource:
        return self.inner.batch_source(step)

    def teacher_output(self) -> TeacherOutput:
        return teacher_output(self.inner)

    def topk_teacher_limit(self) -> str | None:
        return topk_teacher_limit(self.inner)

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        teacher_L_N_D = _teacher_layers(teacher_scores, self.name)
        inner_scores = teacher_scores if self.inner.needs_teacher else None
        with capture_hidden_states(student) as captured:
            out = self.inner.loss(student, rollout, inner_scores)
        mask_B_T, _ = completion_positions(rollout.to_padded(PAD_ID))
        student_L_N_D = pack_layers(captured.only(), [s for s, _ in self.pairs], mask_B_T)
        if out.num_tokens != student_L_N_D.shape[1]:
            raise ConfigError(
                f"objective {self.name!r} counts {out.num_tokens} tokens, not the "
                f"{student_L_N_D.shape[1]} completion positions; hidden-state distillation "
                "needs a same-tokenizer objective"
            )
        if student_L_N_D.shape[1] != teacher_L_N_D.shape[1]:
            raise ValueError(
                f"student has {student_L_N_D.shape[1]} completion positions, the teacher's hidden "
                f"states {teacher_L_N_D.shape[1]}"
            )
        distance_sum = hidden_term(student_L_N_D, teacher_L_N_D, self.projection, self.kind)
        metrics = {**out.metrics, "hidden/distance_sum": float(distance_sum.detach()),
                   **projection_flops(self.projection, student_L_N_D.shape[1])}  # fmt: skip
        return LossOutput(out.loss_sum + self.weight * distance_sum, out.num_tokens, metrics)


def projection_flops(projection: torch.nn.Module, positions: int) -> dict[str, float]:
    """``{PROJECTION_FLOPS: 6 P * positions}`` (forward and backward of the ``P`` projection
    parameters at each compared position; the trainer adds it to the run's FLOPs)."""
    from onpolicy.trainer.step_metrics import PROJECTION_FLOPS

    params = sum(p.numel() for p in projection.parameters())
    return {PROJECTION_FLOPS: 6.0 * params * positions}


def _teacher_layers(scores: TeacherScores | None, name: str) -> torch.Tensor:
    if scores is None or scores.mode != "same":
        raise ConfigError(
            f"hidden-state distillation with objective {name!r} needs same-tokenizer teacher "
            "scores; set teacher.mode=same (or hidden.weight=0)"
        )
    if scores.layer_hidden_L_N_D is None:
        raise ConfigError(
            "the teacher returned no intermediate hidden states; build it with "
            "LocalTeacher(hidden_layers=...) (the trainer does when hidden.weight > 0)"
        )
    return scores.layer_hidden_L_N_D

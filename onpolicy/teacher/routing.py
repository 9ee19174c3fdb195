"""Several teachers in one run: each row routed to the teacher its prompt names, or all of them.

A row whose ``Prompt.teacher`` names a teacher (from the data field ``data.teacher_field``) is
scored by that teacher alone (weight 1). A row that names none is scored by every teacher and its
loss is the weighted mixture ``sum_i w_i * L_i`` with the teachers' ``weight`` normalized to sum
to 1. Teachers may differ in tokenizer from the student and from each other: each scores its rows
with its own backend and mode (``same`` or ``cross``), and the objective runs once per part.

Counted tokens mix the same way (``sum_i w_i * n_i``: the row's own count when every teacher
counts the same units), so the trainer's global normalization is unchanged. Per-teacher metrics:
``teacher/<name>/loss_sum`` and ``teacher/<name>/tokens`` (their ratio is that teacher's mean
loss) and ``teacher/<name>/seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from onpolicy.errors import DataError
from onpolicy.objectives.base import LossOutput
from onpolicy.types import Rollout


@dataclass(frozen=True)
class Part:
    """Rows of a rollout that one teacher scores, and the weight of their loss."""

    name: str
    rows: tuple[int, ...]
    weight: float


def route_rows(teacher_B: Sequence[str | None], weights: dict[str, float]) -> list[Part]:
    """The parts of a batch whose rows name ``teacher_B`` (None: every teacher, by weight).

    ``weights``: teacher name -> weight (> 0), in the config's order. Raises ``DataError`` for a
    name that is not a teacher."""
    total = sum(weights.values())
    routed: dict[str, list[int]] = {name: [] for name in weights}
    mixed: list[int] = []
    for b, name in enumerate(teacher_B):
        if name is None:
            mixed.append(b)
        elif name in routed:
            routed[name].append(b)
        else:
            raise DataError(
                f"a prompt names teacher {name!r}, but the teachers are {sorted(weights)}; fix "
                "the row's teacher field or add that teacher under teachers:"
            )
    parts = [Part(name, tuple(rows), 1.0) for name, rows in routed.items() if rows]
    if mixed:
        parts += [Part(name, tuple(mixed), w / total) for name, w in weights.items()]
    return parts


@dataclass
class Scored:
    """One part's rows and its teacher's scores (for the trainer's tallies)."""

    name: str
    rollout: Rollout
    scores: Any


class TeacherSet:
    """Named teachers (``.score(rollout)`` each) and their mixture weights, in config order.

    ``score`` (evaluation) uses the first teacher; training goes through ``score_and_loss``."""

    def __init__(self, teachers: dict[str, Any], weights: dict[str, float]) -> None:
        if not teachers or set(teachers) != set(weights):
            raise ValueError("TeacherSet needs one weight per teacher, at least one teacher")
        self.teachers, self.weights = dict(teachers), dict(weights)

    @property
    def first(self) -> Any:
        return next(iter(self.teachers.values()))

    def score(self, rollout: Rollout) -> Any:
        """The first teacher's scores (held-out evaluation compares with one teacher)."""
        return self.first.score(rollout)

    def parts(self, rollout: Rollout) -> list[Part]:
        teacher_B = [rollout.prompts[i].teacher for i in rollout.prompt_index_B]
        return route_rows(teacher_B, self.weights)


def score_and_loss(
    teacher: Any, objective: Any, student: Any, rollout: Rollout
) -> tuple[LossOutput, list[Scored]]:
    """The objective's loss on ``rollout`` and the teachers' scores it used.

    One teacher (or none: ``objective.needs_teacher`` False): ``objective.loss`` as it is.
    A ``TeacherSet``: one loss per ``Part``, summed with the part's weight (module docstring)."""
    if not objective.needs_teacher:
        return objective.loss(student, rollout, None), []
    if not isinstance(teacher, TeacherSet):
        scores = teacher.score(rollout)
        return objective.loss(student, rollout, scores), [Scored("", rollout, scores)]
    loss_sum: torch.Tensor | None = None
    counted = 0.0
    metrics: dict[str, float] = {}
    scored = []
    parts = teacher.parts(rollout)
    if not parts:  # no rows: the first teacher's (empty) loss
        return score_and_loss(teacher.first, objective, student, rollout)
    for part in parts:
        sub = rollout.select(part.rows)
        scores = teacher.teachers[part.name].score(sub)
        out = objective.loss(student, sub, scores)
        weighted = out.loss_sum * part.weight
        loss_sum = weighted if loss_sum is None else loss_sum + weighted
        counted += part.weight * out.num_tokens
        for key, value in out.metrics.items():
            metrics[key] = metrics.get(key, 0.0) + part.weight * value
        prefix = f"teacher/{part.name}/"
        for key, value in (
            ("loss_sum", part.weight * float(out.loss_sum.detach())),
            ("tokens", part.weight * out.num_tokens),
            ("seconds", scores.metrics.get("teacher/seconds", 0.0)),
        ):
            metrics[prefix + key] = metrics.get(prefix + key, 0.0) + value
        scored.append(Scored(part.name, sub, scores))
    assert loss_sum is not None  # a non-empty rollout has at least one part
    return LossOutput(loss_sum, round(counted), metrics), scored

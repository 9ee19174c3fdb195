"""Two accountings of a run's training compute, both in every report (``budget.teacher_data``
names the one the budget matches and the headline uses):

- ``free``: the teacher's samples for SFT / supervised KD / GKD's off-policy share cost nothing,
  as if the dataset existed: the recorded FLOPs (``ComputeBudget.flops``) less the teacher's
  up-front draw of its fixed samples;
- ``paid``: ``free`` + the teacher's generation FLOPs of every distinct teacher sample the run
  trained on, each charged at the step that first uses it (``2 N_t`` per prompt + completion
  position, the trainer's formula; the mean cost of one drawn sample).

The trainer draws one fixed sample for every training prompt before step 0 (``teacher.samples:
fixed``); a run that trains on fewer rows than there are prompts pays only for those it used. The
prompt stream reads a seeded shuffle epoch by epoch, so the first ``D`` teacher-sampled rows are
``D`` distinct prompts (``D``: the prompts drawn): the count is exact.

Scoring by the teacher (on-policy, supervised KD) is training compute in both accountings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from onpolicy.trainer.step_metrics import PROJECTION_FLOPS, ComputeBudget

TeacherData = Literal["paid", "free"]
TEACHER_DATA: tuple[str, ...] = ("paid", "free")


@dataclass(frozen=True)
class Flops:
    """A run's (or a curve point's) training FLOPs in both accountings."""

    free: float
    paid: float

    def get(self, teacher_data: str) -> float:
        return self.paid if teacher_data == "paid" else self.free


def teacher_rows(sources: Sequence[str], rows_per_step: int) -> list[int]:
    """Cumulative teacher-sampled rows after ``k`` steps, ``k = 0 .. len(sources)``.

    ``sources[k]``: the objective's ``batch_source(k)`` (``teacher``: the step trains on teacher
    samples).
    """
    out = [0]
    for source in sources:
        out.append(out[-1] + (rows_per_step if source == "teacher" else 0))
    return out


def paid_extra(sample_flops: float, rows: int, distinct: int) -> float:
    """The teacher's generation FLOPs of the distinct samples among the first ``rows`` teacher-
    sampled rows: ``sample_flops * min(rows, distinct)``."""
    return sample_flops * min(rows, distinct)


def step_budgets(records: Sequence[dict[str, Any]]) -> dict[int, ComputeBudget]:
    """Per optimizer step, the positions and seconds the trainer logged (``metrics.jsonl``)."""
    out: dict[int, ComputeBudget] = {}
    for r in records:
        if "train/student_train_tokens" not in r:
            continue  # an evaluation-only record
        out[int(r["step"])] = ComputeBudget(
            student_gen_tokens=r.get("train/student_gen_tokens", 0.0),
            student_train_tokens=r.get("train/student_train_tokens", 0.0),
            teacher_tokens=r.get("train/teacher_tokens", 0.0),
            seconds=r.get("train/step_seconds", 0.0),
            projection_flops=r.get(PROJECTION_FLOPS, 0.0),
        )
    return out


def up_front(total: ComputeBudget, steps: dict[int, ComputeBudget]) -> ComputeBudget:
    """What the run spent outside its logged steps: the draw of its fixed teacher samples."""
    logged = ComputeBudget()
    for b in steps.values():
        logged = logged.add(b)
    return ComputeBudget(
        student_gen_tokens=total.student_gen_tokens - logged.student_gen_tokens,
        student_train_tokens=total.student_train_tokens - logged.student_train_tokens,
        teacher_tokens=total.teacher_tokens - logged.teacher_tokens,
        seconds=total.seconds - logged.seconds,
        projection_flops=total.projection_flops - logged.projection_flops,
    )

"""A step's metrics as GLOBAL values (over micro-batches and processes), and the compute it spent.

Each process adds up a ``StepTally`` of additive quantities (rows, tokens, truncated rows, repeated
n-grams, token positions through each model, seconds, the components' ``*_sum`` metrics) over its
micro-batches. The tallies of all processes are gathered and summed, and every ratio is computed
once from the global sums (``truncated rows / rows``, not a mean of per-process shares). Times are
per process (processes run side by side), so they are averaged over processes: the only mean of
means, where every process weighs the same.

``ComputeBudget`` is what a run spent: token positions through the student (generation and
training) and the teacher (scoring and sampling), and wall seconds; the comparison harness turns it
into FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from onpolicy.trainer.diagnostics import repetition_rate
from onpolicy.types import Rollout

_NGRAM = 3  # repetition rate over trigrams (as ``diagnostics.repetition_rate``)
PROJECTION_FLOPS = "hidden/projection_flops_sum"  # an objective metric, counted in the budget


@dataclass
class ComputeBudget:
    """Compute a run (or a step) spent, in token positions through a forward pass.

    Attributes:
        student_gen_tokens: positions the student's sampler processed (KV-cached generation: the
            prompt once, then one per new token).
        student_train_tokens: positions through the student's training forward (prompt +
            completion per row).
        teacher_tokens: positions through the teacher: scoring (its own tokenization when the
            tokenizers differ) and sampling (teacher samples, fixed ones included).
        seconds: wall time of the training steps (and of drawing fixed teacher samples).
        projection_flops: FLOPs of the hidden-state projection (``onpolicy.hidden``): ``6 P`` per
            compared position, ``P`` its parameters (the objective's ``PROJECTION_FLOPS`` metric).
    """

    student_gen_tokens: int = 0
    student_train_tokens: int = 0
    teacher_tokens: int = 0
    seconds: float = 0.0
    projection_flops: float = 0.0

    def add(self, other: ComputeBudget) -> ComputeBudget:
        """The sum of two budgets (a new object)."""
        return ComputeBudget(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def flops(self, student_params: int, teacher_params: int) -> float:
        """Estimated FLOPs: ``6 N`` per trained position, ``2 N`` per inference position, plus
        the hidden-state projection's."""
        return (
            6.0 * student_params * self.student_train_tokens
            + 2.0 * student_params * self.student_gen_tokens
            + 2.0 * teacher_params * self.teacher_tokens
            + self.projection_flops
        )


def positions(rollout: Rollout) -> int:
    """Prompt + completion positions of every row (a forward pass, or a KV-cached generation)."""
    return sum(
        len(p) + len(c) for p, c in zip(rollout.prompt_ids_B, rollout.completion_ids_B, strict=True)
    )


@dataclass
class StepTally:
    """One process's additive quantities for one step (summed over its micro-batches).

    Attributes:
        rows, completion_tokens, truncated_rows, empty_rows: of the trained completions.
        ngrams, repeated_ngrams: trigrams of the completions and those seen earlier in their row.
        aligned_tokens, alignable_tokens: cross-tokenizer: student completion tokens inside an
            aligned span, and all of them.
        nonfinite_losses: micro-batches whose loss was NaN/inf.
        teacher_nonfinite: NaN/+inf values in the teacher's scores (``diagnostics
            .teacher_nonfinite``; -inf masks not counted).
        budget: compute spent (positions; ``seconds`` is this process's wall time).
        sums: component metrics that add up (names ending ``_sum`` or ``/tokens``).
        times: component metrics that are per-process values (e.g. ``teacher/seconds``), summed
            over micro-batches; averaged over processes.
    """

    rows: int = 0
    completion_tokens: int = 0
    truncated_rows: int = 0
    empty_rows: int = 0
    ngrams: int = 0
    repeated_ngrams: float = 0.0
    aligned_tokens: int = 0
    alignable_tokens: int = 0
    nonfinite_losses: int = 0
    teacher_nonfinite: int = 0
    budget: ComputeBudget = field(default_factory=ComputeBudget)
    sums: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)


def tally_rollout(tally: StepTally, rollout: Rollout) -> None:
    """Add a trained micro-batch's completions to ``tally`` (rows, tokens, truncation, repeats)."""
    lengths = [len(c) for c in rollout.completion_ids_B]
    grams = sum(max(n - _NGRAM + 1, 0) for n in lengths)
    tally.rows += len(lengths)
    tally.completion_tokens += sum(lengths)
    tally.truncated_rows += sum(r == "length" for r in rollout.finish_reason_B)
    tally.empty_rows += sum(n == 0 for n in lengths)
    tally.ngrams += grams
    tally.repeated_ngrams += repetition_rate(rollout.completion_ids_B, _NGRAM) * grams
    tally.budget.student_train_tokens += positions(rollout)


def tally_components(tally: StepTally, *metrics: dict[str, float]) -> None:
    """Add components' metrics: sums to ``sums``, per-process values to ``times``. Rates
    (``*_per_second``) and ``teacher/coverage`` are dropped: they are recomputed globally."""
    for src in metrics:
        for k, v in src.items():
            if k.endswith("_per_second") or k == "teacher/coverage":
                continue
            into = tally.sums if k.endswith(("_sum", "/tokens")) else tally.times
            into[k] = into.get(k, 0.0) + float(v)
            if k == PROJECTION_FLOPS:
                tally.budget.projection_flops += float(v)


def tally_alignment(tally: StepTally, student_span_B: Sequence[torch.Tensor]) -> None:
    """Cross-tokenizer scores (``CrossScores.cross.student_span_B``: the span of each student
    completion token, ``-1`` outside every span): count student tokens inside an aligned span."""
    for span_Ts in student_span_B:
        tally.aligned_tokens += int((span_Ts >= 0).sum())
        tally.alignable_tokens += len(span_Ts)


def add_tallies(tallies: Sequence[StepTally]) -> StepTally:
    """The field-by-field sum of ``tallies`` (a new object; ``times`` are summed too)."""
    total = StepTally()
    for t in tallies:
        for f in fields(StepTally):
            if f.name not in ("budget", "sums", "times"):
                setattr(total, f.name, getattr(total, f.name) + getattr(t, f.name))
        total.budget = total.budget.add(t.budget)
        for into, src in ((total.sums, t.sums), (total.times, t.times)):
            for key, value in src.items():
                into[key] = into.get(key, 0.0) + value
    return total


def combine(tallies: Sequence[StepTally]) -> dict[str, float]:
    """The step's global metrics from every process's tally (see the module docstring)."""
    world = len(tallies)
    total = add_tallies(tallies)
    total.times = {k: v / world for k, v in total.times.items()}  # per-process: mean
    seconds = total.budget.seconds / world
    rows = max(total.rows, 1)
    out = {
        "diag/truncated_share": total.truncated_rows / rows,
        "diag/empty_share": total.empty_rows / rows,
        "diag/completion_length": total.completion_tokens / rows,
        "diag/repetition_rate": total.repeated_ngrams / total.ngrams if total.ngrams else 0.0,
        "train/completion_tokens": float(total.completion_tokens),
        "train/nonfinite_losses": float(total.nonfinite_losses),
        "diag/teacher_nonfinite": float(total.teacher_nonfinite),
        "train/student_gen_tokens": float(total.budget.student_gen_tokens),
        "train/student_train_tokens": float(total.budget.student_train_tokens),
        "train/teacher_tokens": float(total.budget.teacher_tokens),
        "train/step_seconds": seconds,
        "train/tokens_per_second": total.completion_tokens / max(seconds, 1e-9),
        **total.sums,
        **total.times,
    }
    if total.alignable_tokens:
        out["teacher/coverage"] = total.aligned_tokens / total.alignable_tokens
    if "rollout/tokens" in total.sums and total.times.get("rollout/seconds"):
        out["rollout/tokens_per_second"] = (
            total.sums["rollout/tokens"] / total.times["rollout/seconds"]
        )
    return out


def global_budget(tallies: Sequence[StepTally]) -> ComputeBudget:
    """Positions summed over processes; seconds averaged (processes run side by side)."""
    out = ComputeBudget()
    for t in tallies:
        out = out.add(t.budget)
    out.seconds /= max(len(tallies), 1)
    return out


def gather_tallies(accelerator: Any, tally: StepTally) -> list[StepTally]:
    """Every process's tally, in rank order (one collective; none on a single process)."""
    if accelerator.num_processes == 1:
        return [tally]
    from accelerate.utils import gather_object

    return list(gather_object([tally]))

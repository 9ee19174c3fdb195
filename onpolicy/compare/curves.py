"""Learning curves of the comparison (``eval: {every: N}``): what the trainer's evaluation logged
every ``N`` optimizer steps (``metrics.jsonl``), placed at the cumulative training FLOPs (both
accountings, ``accounting.py``) and wall seconds spent up to that step, and summarized per method.

A point's metrics, on the held-out prompts, on the student's own greedy completions
(``onpolicy.trainer.evaluate``): ``score`` (the task metric), ``kl_per_token`` (the exact
full-distribution KL(student || teacher) per completion token; same tokenizer only),
``kl_per_byte`` (the same KL per UTF-8 byte of the completions: KL/char, comparable across
tokenizers of the same text), ``teacher_nll_per_byte`` (the teacher's NLL of the
student's completions per UTF-8 byte), ``forward_nll_per_token`` / ``forward_nll_per_byte`` (with
``eval: {forward_nll: true}``: the student's NLL of a fixed pool of held-out temperature-1 teacher
samples, ``onpolicy.trainer.forward_pool``; the coverage of the teacher's distribution that the
mode-seeking reverse KL can lose while the score holds), ``repetition`` (the share of the
completions' token trigrams already seen earlier in the same completion) and ``cut_share`` (the
share of completions cut at the length limit): a student collapsed into loops lowers the KL on its
own completions while these two rise. Evaluation compute is not training compute: not counted.

Summaries over the seed-mean curve of a method (points at the same steps across seeds; x = the
seeds' mean FLOPs): ``best`` score; ``flops_to_reach(X)``: the FLOPs of the first evaluation whose
mean score is >= X (None: never); ``auc``: the mean score over FLOPs ``[0, F]`` (trapezoids; a
common ``F`` for all methods of a table, so the areas compare). A task without a metric (``metric:
none``) is summarized on ``kl_per_byte`` instead, lower being better (``lower=True``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onpolicy.compare import accounting as acc
from onpolicy.trainer.step_metrics import ComputeBudget

_METRICS = {
    "score": "eval/score",
    "kl_per_token": "eval/kl_per_token",
    "kl_per_byte": "eval/kl_per_byte",
    "teacher_nll_per_byte": "eval/teacher_nll_per_byte",
    "forward_nll_per_token": "eval/forward_nll_per_token",
    "forward_nll_per_byte": "eval/forward_nll_per_byte",
    "repetition": "eval/repetition_rate",
    "cut_share": "eval/truncated_share",
}


@dataclass
class CurvePoint:
    """One evaluation during a run, at the compute spent before it (see the module docstring)."""

    step: int
    flops_free: float
    flops_paid: float
    seconds: float
    score: float | None = None
    kl_per_token: float | None = None
    kl_per_byte: float | None = None
    teacher_nll_per_byte: float | None = None
    repetition: float | None = None
    cut_share: float | None = None
    forward_nll_per_token: float | None = None  # last: positional construction unchanged
    forward_nll_per_byte: float | None = None

    def flops(self, teacher_data: str) -> float:
        return self.flops_paid if teacher_data == "paid" else self.flops_free


@dataclass
class RunAccount:
    """A run's curve and its total training FLOPs in both accountings.

    Attributes:
        curve: the evaluations in step order (step 0 = before training).
        flops: the whole run's FLOPs (``free`` / ``paid``).
        up_front_flops: the teacher's draw of fixed samples before step 0 (all training prompts).
        seconds: wall seconds of the training steps.
    """

    curve: list[CurvePoint]
    flops: acc.Flops
    up_front_flops: float
    seconds: float


def account_run(
    records: Sequence[dict[str, Any]],
    total: ComputeBudget,
    sizes: tuple[int, int],
    sources: Sequence[str],
    rows_per_step: int,
    distinct: int,
) -> RunAccount:
    """The ``RunAccount`` of a trainer run from its ``metrics.jsonl`` ``records`` and its whole
    ``total`` budget; ``sizes``: ``(N_s, N_t)``; ``sources[k]``: the objective's batch source of
    step ``k``; ``distinct``: the training prompts the teacher drew a sample for."""
    n_s, n_t = sizes
    steps = acc.step_budgets(records)
    once = acc.up_front(total, steps)
    draw = once.flops(n_s, n_t)
    sample = draw / distinct if distinct else 0.0
    rows = acc.teacher_rows(sources, rows_per_step)

    def at(step: int) -> tuple[float, float, float]:
        spent = ComputeBudget()
        for k, b in steps.items():
            if k <= step:
                spent = spent.add(b)
        free = spent.flops(n_s, n_t)
        done = rows[min(step, len(rows) - 1)]
        return free, free + acc.paid_extra(sample, done, distinct), spent.seconds

    curve = []
    for r in records:
        if not any(key in r for key in _METRICS.values()):
            continue
        free, paid, seconds = at(int(r["step"]))
        values = {name: r.get(key) for name, key in _METRICS.items()}
        curve.append(CurvePoint(int(r["step"]), free, paid, seconds, **values))
    last = max(steps, default=0)
    free, paid, seconds = at(last)
    return RunAccount(curve, acc.Flops(free, paid), draw, seconds)


@dataclass
class MeanPoint:
    """The seed-mean of the points at one step: ``x`` FLOPs, ``y`` and its sample sd."""

    step: int
    x: float
    y: float
    sd: float
    seeds: int


def mean_curve(
    curves: Sequence[Sequence[CurvePoint]], teacher_data: str, metric: str = "score"
) -> list[MeanPoint]:
    """Points at the steps every seed evaluated, averaged over seeds (sd 0 for one seed)."""
    by_step: dict[int, list[CurvePoint]] = {}
    for curve in curves:
        for p in curve:
            if getattr(p, metric) is not None:
                by_step.setdefault(p.step, []).append(p)
    out = []
    for step in sorted(by_step):
        pts = by_step[step]
        if len(pts) < len(curves):
            continue  # a step that not every seed reached (budgets differ per seed)
        ys = [getattr(p, metric) for p in pts]
        sd = statistics.stdev(ys) if len(ys) > 1 else 0.0
        x = statistics.fmean(p.flops(teacher_data) for p in pts)
        out.append(MeanPoint(step, x, statistics.fmean(ys), sd, len(pts)))
    return out


def best(points: Sequence[MeanPoint], lower: bool = False) -> float | None:
    """The highest mean value (``lower``: the lowest, for a metric where lower is better)."""
    pick = min if lower else max
    return pick((p.y for p in points), default=None)


def flops_to_reach(
    points: Sequence[MeanPoint], target: float | None, lower: bool = False
) -> float | None:
    """FLOPs of the first point whose mean value is >= ``target`` (``lower``: <= ``target``);
    None: never, or no target."""
    if target is None:
        return None
    if lower:
        return next((p.x for p in points if p.y <= target + 1e-12), None)
    return next((p.x for p in points if p.y >= target - 1e-12), None)


def warm_metric(records: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """``(curve key, name)`` a warm-up (``warm.json`` records) is shown by: its validation score,
    or the KL(student || teacher) per byte when the task has no metric."""
    if any(p.get("score") is not None for r in records for p in r.get("curve", [])):
        return "score", "score"
    return "kl_per_byte", "KL/byte"


def has_metric(curves: Sequence[Sequence[CurvePoint]], metric: str) -> bool:
    """Whether any point of ``curves`` holds ``metric`` (a task without a metric has no score)."""
    return any(getattr(p, metric) is not None for curve in curves for p in curve)


def auc(points: Sequence[MeanPoint], upto: float) -> float | None:
    """Mean of the curve over FLOPs ``[0, upto]`` (trapezoids; the curve is held flat past its
    last point and interpolated inside); None when it has no point or ``upto <= 0``."""
    pts = sorted(points, key=lambda p: p.x)
    if not pts or upto <= 0:
        return None
    xs = [p.x for p in pts] + [max(upto, pts[-1].x)]
    ys = [p.y for p in pts] + [pts[-1].y]
    area, x0, y0 = 0.0, 0.0, ys[0]  # flat from 0 to the first point
    for x, y in zip(xs, ys, strict=True):
        if x >= upto:
            y_cut = y0 + (y - y0) * (upto - x0) / (x - x0) if x > x0 else y
            area += (upto - x0) * (y0 + y_cut) / 2
            return area / upto
        area += (x - x0) * (y0 + y) / 2
        x0, y0 = x, y
    return area / upto


def plateau_step(
    curve: Sequence[CurvePoint],
    window: int,
    min_gain: float,
    metric: str = "score",
    min_share: float = 0.0,
) -> tuple[int, bool]:
    """Where a warm-up curve reaches its plateau: the first evaluation ``i >= window`` at which
    the best score so far exceeds the best score up to ``window`` evaluations earlier by less than
    ``min_gain`` (SFT's gain over the last ``window`` evaluations has flattened), once the best
    score has risen by at least ``min_gain`` above the first evaluation (a curve that has not
    started to climb is not at a plateau). Returns ``(step, reached)``; the last step with
    ``reached=False`` when the rule never holds. ``metric="kl_per_byte"`` (a task without a
    metric): the same rule on minus the KL per byte (the KL's fall has flattened). ``min_share`` > 0
    widens the window at evaluation ``i`` to ``max(window, ceil(min_share * i))`` evaluations, so
    that a slow climb (a small gain per evaluation over a long run) is not taken for a plateau.
    Measured case: a 6-digit warm-up read 0.18, 0.20, 0.20, 0.22 at steps 2000-2600 (every 200) and
    the fixed window 3 fired at 2600, mid-climb; the student went on to 0.93 by step 4000
    (docs/results/evidence-long-gpu.md); ``min_share=0.4`` (a window of 5 there) does not fire."""
    sign = 1.0 if metric == "score" else -1.0  # every other curve metric: lower is better
    pts = [(p.step, sign * getattr(p, metric)) for p in curve if getattr(p, metric) is not None]
    if not pts:
        return (curve[-1].step if curve else 0), False
    running, top = [], float("-inf")
    for _, value in pts:
        top = max(top, value)
        running.append(top)
    for i in range(window, len(pts)):
        span = max(window, math.ceil(min_share * i))
        if span > i:
            continue
        climbed = running[i] - pts[0][1] >= min_gain
        if climbed and running[i] - running[i - span] < min_gain:
            return pts[i][0], True
    return pts[-1][0], False

"""The scaling-law report: fit, bootstrap intervals, held-out errors, capacity-gap curve, plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onpolicy.scaling.fit import (
    Fit,
    HeldOut,
    Interval,
    bootstrap,
    capacity_gap,
    fit_law,
    kfold,
    largest_out,
)
from onpolicy.scaling.laws import Law, Runs, get_law


@dataclass(frozen=True)
class Gap:
    """The capacity-gap curve: predicted student loss against teacher loss at a fixed student.

    Attributes:
        student_params, tokens, supervised_loss: the fixed student (``supervised_loss`` NaN for
            the additive form).
        teacher_losses, student_losses: the curve ``[K]``.
        best_teacher_loss: the teacher loss with the lowest predicted student loss (an interior
            minimum is a capacity gap: a better teacher than that makes a worse student).
    """

    student_params: float
    tokens: float
    supervised_loss: float
    teacher_losses: list[float]
    student_losses: list[float]
    best_teacher_loss: float


@dataclass(frozen=True)
class ScalingReport:
    law: str
    fit: Fit
    intervals: dict[str, Interval]
    held_out: list[HeldOut]
    gap: Gap


def gap_curve(law: Law, runs: Runs, theta: np.ndarray, points: int = 60) -> Gap:
    """The curve at the table's largest student and token count, teacher losses from 0.5x the
    lowest to 1.2x the highest in the table."""
    n, d = float(runs.student_params.max()), float(runs.tokens.max())
    same = (runs.student_params == n) & (runs.tokens == d)
    sup = float(np.nanmedian(runs.supervised_loss[same])) if law.needs_supervised else np.nan
    grid = np.linspace(0.5 * runs.teacher_loss.min(), 1.2 * runs.teacher_loss.max(), points)
    curve = capacity_gap(law, theta, n, d, grid, sup)
    return Gap(n, d, sup, grid.tolist(), curve.tolist(), float(grid[int(np.argmin(curve))]))


def analyse(
    runs: Runs, form: str = "additive", samples: int = 200, folds: int = 5, seed: int = 0
) -> ScalingReport:
    """Fit ``form`` to ``runs``; bootstrap (``samples`` resamples), ``folds``-fold held-out error
    and, when the table has several student sizes, the largest student held out."""
    law = get_law(form)
    fit = fit_law(law, runs)
    intervals = bootstrap(law, runs, fit, samples, seed) if samples > 0 else {}
    held = [kfold(law, runs, fit, folds, seed)]
    smaller = runs.student_params < runs.student_params.max()
    if smaller.sum() > len(law.params):
        held.append(largest_out(law, runs, fit))
    return ScalingReport(form, fit, intervals, held, gap_curve(law, runs, fit.theta))


def markdown(report: ScalingReport, source: str = "") -> str:
    """The report as Markdown."""
    fit, law = report.fit, get_law(report.law)
    lines = [
        f"## Distillation scaling law: `{report.law}` form" + (f" ({source})" if source else ""),
        "",
        f"{fit.num_runs} runs; in-fit RMSE {fit.rmse:.4g}.",
        "",
        "| coefficient | fit | bootstrap mean ± sd | 95% interval |",
        "|---|---|---|---|",
    ]
    for key, value in fit.coefficients.items():
        iv = report.intervals.get(key)
        boot = f"{iv.mean:.4g} ± {iv.std:.2g}" if iv else "–"
        ci = f"[{iv.low:.4g}, {iv.high:.4g}]" if iv else "–"
        lines.append(f"| {key} | {value:.4g} | {boot} | {ci} |")
    lines += [
        "",
        "| held out | runs | RMSE | max abs error | mean rel error |",
        "|---|---|---|---|---|",
    ]
    for h in report.held_out:
        what = "k-fold (each run out of its fit)" if h.kind == "kfold" else "largest student"
        lines.append(
            f"| {what} | {len(h.observed)} | {h.rmse:.4g} | {h.max_abs:.4g} | {h.mean_rel:.2%} |"
        )
    g = report.gap
    curve = np.asarray(g.student_losses)
    interior = 0 < int(np.argmin(curve)) < len(curve) - 1
    lines += [
        "",
        f"Capacity gap at N_S={g.student_params:.3g}, D_S={g.tokens:.3g}: the predicted student "
        f"loss is lowest at teacher loss {g.best_teacher_loss:.4g} "
        + (
            "(an interior minimum: a stronger teacher than that predicts a worse student)."
            if interior
            else "(the edge of the range: no capacity gap within it"
            + ("; the additive form cannot show one)." if not law.needs_supervised else ").")
        ),
    ]
    return "\n".join(lines) + "\n"


def to_json(report: ScalingReport) -> dict[str, Any]:
    out = asdict(report)
    out["fit"]["theta"] = report.fit.theta.tolist()
    for h in out["held_out"]:
        h["predicted"], h["observed"] = (
            list(map(float, h["predicted"])),
            list(map(float, h["observed"])),
        )
    return out


def write_report(report: ScalingReport, runs: Runs, out: Path, source: str = "") -> dict[str, Path]:
    """``scaling.md``, ``scaling.json`` and (with matplotlib) ``scaling.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "scaling.md", "json": out / "scaling.json"}
    paths["markdown"].write_text(markdown(report, source))
    paths["json"].write_text(json.dumps(to_json(report), indent=1, default=float))
    png = plot(report, runs, out / "scaling.png")
    if png is not None:
        paths["plot"] = png
    return paths


def plot(report: ScalingReport, runs: Runs, path: Path) -> Path | None:
    """Observed vs predicted (in-fit and k-fold held out) and the capacity-gap curve."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    law = get_law(report.law)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    fitted = law.predict(report.fit.theta, runs)
    left.scatter(runs.student_loss, fitted, s=14, label="in fit")
    kf = next(h for h in report.held_out if h.kind == "kfold")
    left.scatter(kf.observed, kf.predicted, s=14, marker="x", label="held out (k-fold)")
    lo, hi = float(runs.student_loss.min()), float(runs.student_loss.max())
    left.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    left.set(xlabel="observed student loss", ylabel="predicted", title=f"{report.law} law")
    left.legend()
    g = report.gap
    right.plot(g.teacher_losses, g.student_losses)
    right.axvline(g.best_teacher_loss, color="gray", ls=":", lw=0.8)
    right.set(
        xlabel="teacher loss L_T", ylabel="predicted student loss",
        title=f"capacity gap (N_S={g.student_params:.3g}, D_S={g.tokens:.3g})",
    )  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

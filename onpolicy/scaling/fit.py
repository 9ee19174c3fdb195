"""Fitting a scaling law to runs: least squares, bootstrap uncertainty, held-out error, the
capacity-gap curve. Pure functions of numpy arrays (scipy's ``least_squares`` does the fit)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onpolicy.errors import DataError
from onpolicy.scaling.laws import Law, Runs, public


@dataclass(frozen=True)
class Fit:
    """One least-squares fit.

    Attributes:
        theta: the parameters in fitting units (``Law.params``).
        coefficients: the reported coefficients (``laws.public``).
        rmse: root mean squared residual on the fitted runs.
        num_runs: runs fitted.
    """

    theta: np.ndarray
    coefficients: dict[str, float]
    rmse: float
    num_runs: int


@dataclass(frozen=True)
class Interval:
    """A coefficient's bootstrap distribution: mean, standard deviation, 2.5% and 97.5%."""

    mean: float
    std: float
    low: float
    high: float


@dataclass(frozen=True)
class HeldOut:
    """Prediction error on runs left out of the fit.

    Attributes:
        kind: ``kfold`` (every run predicted by a fit without its fold) or ``largest`` (the runs
            of the largest student size predicted by a fit on the smaller ones: extrapolation).
        predicted, observed: ``[R']`` student losses of the held-out runs.
        rmse, max_abs, mean_rel: root mean squared, largest absolute and mean relative error.
    """

    kind: str
    predicted: np.ndarray
    observed: np.ndarray
    rmse: float
    max_abs: float
    mean_rel: float


def check_runs(law: Law, runs: Runs) -> None:
    """Enough finite, positive data for ``law`` (a one-line ``DataError`` otherwise)."""
    if len(runs) <= len(law.params):
        raise DataError(
            f"{len(runs)} runs cannot fit the {len(law.params)} coefficients of the {law.name!r} "
            "law; add runs (a grid of student sizes x tokens x teachers)"
        )
    for name in ("student_params", "tokens", "teacher_loss", "student_loss"):
        values = getattr(runs, name)
        if not np.all(np.isfinite(values) & (values > 0)):
            raise DataError(
                f"column {name} has non-positive or missing values; every run needs one"
            )
    if law.needs_supervised and not np.all(np.isfinite(runs.supervised_loss)):
        raise DataError(
            f"the {law.name!r} law needs supervised_loss (the student trained without a teacher) "
            "for every run; add the column or use --form additive"
        )


def fit_law(
    law: Law, runs: Runs, starts: list[np.ndarray] | None = None, warm: bool = False
) -> Fit:
    """The least-squares fit of ``law`` to ``runs`` (residuals in loss units), best of several
    starting points (``starts`` plus the law's own; only ``starts`` when ``warm``)."""
    from scipy.optimize import least_squares

    check_runs(law, runs)
    lower, upper = np.asarray(law.lower), np.asarray(law.upper)
    best = None
    candidates = list(starts or []) + ([] if warm else [np.asarray(x) for x in law.starts])
    for start in candidates:
        x0 = np.clip(np.asarray(start, dtype=np.float64), lower + 1e-9, upper - 1e-9)

        def residual(theta: np.ndarray) -> np.ndarray:
            return law.predict(theta, runs) - runs.student_loss

        with np.errstate(over="ignore", invalid="ignore"):
            result = least_squares(
                residual, x0, bounds=(lower, upper), x_scale="jac", max_nfev=4000,
                xtol=1e-12, ftol=1e-12, gtol=1e-12,
            )  # fmt: skip
        if np.isfinite(result.cost) and (best is None or result.cost < best.cost):
            best = result
    if best is None:
        raise DataError(f"the {law.name!r} law could not be fitted to these runs (no finite fit)")
    rmse = float(np.sqrt(np.mean(best.fun**2)))
    return Fit(best.x, public(law, best.x), rmse, len(runs))


def bootstrap(
    law: Law, runs: Runs, fit: Fit, samples: int = 200, seed: int = 0
) -> dict[str, Interval]:
    """Resample the runs with replacement ``samples`` times, refit each (warm-started from
    ``fit`` only), and summarize each coefficient's distribution."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        index = rng.integers(0, len(runs), len(runs))
        try:
            draws.append(public(law, fit_law(law, runs.subset(index), [fit.theta], True).theta))
        except DataError:
            continue
    out = {}
    for key in fit.coefficients:
        values = np.array([d[key] for d in draws])
        out[key] = Interval(
            float(values.mean()), float(values.std(ddof=1)),
            float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)),
        )  # fmt: skip
    return out


def _held_out(kind: str, predicted: np.ndarray, observed: np.ndarray) -> HeldOut:
    err = predicted - observed
    return HeldOut(
        kind, predicted, observed, float(np.sqrt(np.mean(err**2))), float(np.abs(err).max()),
        float(np.mean(np.abs(err) / observed)),
    )  # fmt: skip


def kfold(law: Law, runs: Runs, fit: Fit, folds: int = 5, seed: int = 0) -> HeldOut:
    """Each run predicted by a fit on the other folds (runs split at random into ``folds``)."""
    order = np.random.default_rng(seed).permutation(len(runs))
    predicted = np.empty(len(runs))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        sub = fit_law(law, runs.subset(train), [fit.theta])
        predicted[fold] = law.predict(sub.theta, runs.subset(fold))
    return _held_out("kfold", predicted, runs.student_loss)


def largest_out(law: Law, runs: Runs, fit: Fit) -> HeldOut:
    """The runs of the largest student size predicted by a fit on every smaller student."""
    top = runs.student_params.max()
    test = np.flatnonzero(runs.student_params == top)
    train = np.flatnonzero(runs.student_params < top)
    sub = fit_law(law, runs.subset(train), [fit.theta])
    held = runs.subset(test)
    return _held_out("largest", law.predict(sub.theta, held), held.student_loss)


def capacity_gap(
    law: Law,
    theta: np.ndarray,
    student_params: float,
    tokens: float,
    teacher_losses: np.ndarray,
    supervised_loss: float = float("nan"),
) -> np.ndarray:
    """Predicted student loss ``[K]`` against the teacher's loss ``teacher_losses [K]`` at a fixed
    student (``N_S``, ``D_S``, and its supervised loss for the ``busbridge`` form)."""
    k = len(teacher_losses)
    runs = Runs(
        np.full(k, float(student_params)), np.full(k, float(tokens)),
        np.asarray(teacher_losses, dtype=np.float64), np.full(k, np.nan),
        np.full(k, float(supervised_loss)), tuple(str(i) for i in range(k)),
    )  # fmt: skip
    return law.predict(theta, runs)

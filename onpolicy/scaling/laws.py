"""Distillation scaling laws: student loss from student size, distillation tokens, teacher loss.

Two forms, both pure numpy functions of a parameter vector and a ``Runs`` table:

``additive`` (the project's issue 16 form, a simplified surrogate)::

    L_S = E + B / D_S^a + C / N_S^b + g * (L_T - A) * (D_S / N_S)^(-d)

a Chinchilla-style supervised part plus a teacher term linear in the teacher's loss. With ``g > 0``
the student's loss falls monotonically as the teacher's does: this form **cannot** express a
capacity gap (a better teacher making a worse student).

``busbridge`` (Busbridge et al. 2025, "Distillation Scaling Laws", Eq. 8, as published)::

    L_S = L_T + L_T^(-c0) * (1 + (L_T / (Lsup_S * d1))^(1/f1))^(-c1 * f1)
              * (A' / N_S^alpha + B' / D_S^beta)^gamma

where ``Lsup_S`` is the same student's loss trained *without* a teacher on the same tokens (the
supervised scaling law's value; a column of the table). The broken power law in
``L_T / Lsup_S`` switches regimes where the teacher's loss crosses the student's own capacity
(``d1``): for a teacher much stronger than the student can follow, the gap term grows again, the
capacity gap. (Form checked against a secondary transcription of the paper's equation; the
variable names follow the paper.)

Internally positive coefficients are fitted as logarithms (``log_B``...), reported as values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onpolicy.errors import ConfigError


@dataclass(frozen=True)
class Runs:
    """A table of distillation runs (one entry per run, all arrays ``[R]`` float64).

    Attributes:
        student_params: ``N_S``, the student's parameter count.
        tokens: ``D_S``, distillation tokens the student trained on.
        teacher_loss: ``L_T``, the teacher's loss (same metric and data as the student's).
        student_loss: ``L_S``, the distilled student's loss.
        supervised_loss: ``Lsup_S``, the same student trained without a teacher (NaN if unknown;
            needed by the ``busbridge`` form).
        names: a label per run.
    """

    student_params: np.ndarray
    tokens: np.ndarray
    teacher_loss: np.ndarray
    student_loss: np.ndarray
    supervised_loss: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.student_loss)

    def subset(self, index: np.ndarray) -> Runs:
        """The runs at ``index`` (an int array; repeats allowed, e.g. a bootstrap resample)."""
        return Runs(
            self.student_params[index], self.tokens[index], self.teacher_loss[index],
            self.student_loss[index], self.supervised_loss[index],
            tuple(self.names[i] for i in index),
        )  # fmt: skip


Predict = Callable[[np.ndarray, Runs], np.ndarray]


@dataclass(frozen=True)
class Law:
    """A scaling-law form: ``predict(theta, runs) -> L_S [R]``; ``theta`` in fitting units.

    Attributes:
        name: the form's name (``--form``).
        params: names of ``theta``'s entries (``log_X`` entries are reported as ``X = exp``).
        predict: the law.
        starts: starting points for the multi-start fit.
        lower, upper: bounds on ``theta``.
        needs_supervised: whether runs must carry ``supervised_loss``.
    """

    name: str
    params: tuple[str, ...]
    predict: Predict
    starts: tuple[tuple[float, ...], ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    needs_supervised: bool = False


def public(law: Law, theta: np.ndarray) -> dict[str, float]:
    """Coefficients as reported: ``log_X`` entries exponentiated and renamed ``X``."""
    out = {}
    for name, value in zip(law.params, theta, strict=True):
        if name.startswith("log_"):
            out[name.removeprefix("log_")] = float(np.exp(value))
        else:
            out[name] = float(value)
    return out


def internal(law: Law, coefficients: dict[str, float]) -> np.ndarray:
    """The inverse of ``public``: reported coefficients -> ``theta``."""
    theta = []
    for name in law.params:
        key = name.removeprefix("log_")
        if key not in coefficients:
            raise ConfigError(f"law {law.name!r} needs coefficient {key!r}")
        value = coefficients[key]
        theta.append(np.log(value) if name.startswith("log_") else value)
    return np.asarray(theta, dtype=np.float64)


def _additive(theta: np.ndarray, runs: Runs) -> np.ndarray:
    e, log_b, a, log_c, b, g, big_a, d = theta
    ln_n, ln_d = np.log(runs.student_params), np.log(runs.tokens)
    supervised = e + np.exp(log_b - a * ln_d) + np.exp(log_c - b * ln_n)
    return supervised + g * (runs.teacher_loss - big_a) * np.exp(-d * (ln_d - ln_n))


def _busbridge(theta: np.ndarray, runs: Runs) -> np.ndarray:
    c0, c1, f1, log_d1, log_a, alpha, log_b, beta, gamma = theta
    lt, ls = runs.teacher_loss, runs.supervised_loss
    ln_n, ln_d = np.log(runs.student_params), np.log(runs.tokens)
    ratio = (np.log(lt) - np.log(ls) - log_d1) / f1  # log of (L_T / (Lsup_S d1))^(1/f1)
    broken = -c1 * f1 * np.logaddexp(0.0, ratio)  # log of (1 + ...)^(-c1 f1)
    capacity = gamma * np.logaddexp(log_a - alpha * ln_n, log_b - beta * ln_d)
    return lt + np.exp(-c0 * np.log(lt) + broken + capacity)


ADDITIVE = Law(
    name="additive",
    params=("E", "log_B", "a", "log_C", "b", "g", "A", "d"),
    predict=_additive,
    starts=(
        (1.0, 3.0, 0.3, 3.0, 0.3, 0.5, 1.0, 0.3),
        (0.5, 6.0, 0.5, 6.0, 0.5, 0.2, 0.0, 0.1),
        (2.0, 1.0, 0.2, 1.0, 0.2, 1.0, 2.0, 0.6),
    ),
    lower=(-np.inf, -30.0, 0.0, -30.0, 0.0, -np.inf, -np.inf, 0.0),
    upper=(np.inf, 60.0, 3.0, 60.0, 3.0, np.inf, np.inf, 3.0),
)

BUSBRIDGE = Law(
    name="busbridge",
    params=("c0", "c1", "f1", "log_d1", "log_A", "alpha", "log_B", "beta", "gamma"),
    predict=_busbridge,
    starts=(
        (2.5, 0.6, 1.0, 0.0, 6.0, 0.4, 7.0, 0.4, 0.5),
        (1.0, 1.0, 0.5, 0.3, 3.0, 0.3, 3.0, 0.3, 1.0),
        (0.5, 0.3, 2.0, -0.3, 9.0, 0.6, 10.0, 0.6, 0.3),
    ),
    lower=(-5.0, 0.0, 0.05, -3.0, -30.0, 0.0, -30.0, 0.0, 0.05),
    upper=(10.0, 10.0, 20.0, 3.0, 60.0, 3.0, 60.0, 3.0, 5.0),
    needs_supervised=True,
)

LAWS: dict[str, Law] = {law.name: law for law in (ADDITIVE, BUSBRIDGE)}


def get_law(name: str) -> Law:
    if name not in LAWS:
        raise ConfigError(f"unknown scaling-law form {name!r}; use one of {sorted(LAWS)}")
    return LAWS[name]

"""Tables of runs for the scaling-law fit: read from CSV / JSONL, or drawn from a known law.

Columns (CSV header or JSONL keys): ``student_params`` (N_S), ``tokens`` (D_S, distillation
tokens), ``teacher_loss`` (L_T), ``student_loss`` (L_S), optional ``supervised_loss`` (the student
trained without a teacher; the ``busbridge`` form needs it) and ``name``. Losses are per token (or
per byte), the same metric for teacher and student, on the same held-out data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from onpolicy.errors import DataError
from onpolicy.scaling.laws import Law, Runs, internal

REQUIRED = ("student_params", "tokens", "teacher_loss", "student_loss")


def read_runs(path: str | Path) -> Runs:
    """The runs in a ``.csv`` or ``.jsonl``/``.json`` file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"runs file {p} does not exist; give a CSV or JSONL table of runs")
    if p.suffix == ".csv":
        with p.open(newline="") as f:
            rows = list(csv.DictReader(f))
    elif p.suffix in (".jsonl", ".json"):
        text = p.read_text()
        rows = json.loads(text) if p.suffix == ".json" else [
            json.loads(line) for line in text.splitlines() if line.strip()
        ]  # fmt: skip
    else:
        raise DataError(f"runs file {p}: use a .csv, .jsonl or .json (a list of rows) file")
    return runs_from_rows(rows, str(p))


def runs_from_rows(rows: list[dict[str, Any]], where: str = "rows") -> Runs:
    """``Runs`` from dicts with the columns of the module docstring."""
    if not rows:
        raise DataError(f"{where} has no runs")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        raise DataError(f"{where} lacks columns {missing}; every run needs {list(REQUIRED)}")

    def column(key: str, optional: bool = False) -> np.ndarray:
        out = []
        for i, row in enumerate(rows):
            value = row.get(key)
            if value in (None, "") and optional:
                out.append(np.nan)
                continue
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                raise DataError(f"{where} run {i}: {key}={value!r} is not a number") from None
        return np.asarray(out, dtype=np.float64)

    names = tuple(str(r.get("name") or f"run{i}") for i, r in enumerate(rows))
    return Runs(
        column("student_params"), column("tokens"), column("teacher_loss"),
        column("student_loss"), column("supervised_loss", optional=True), names,
    )  # fmt: skip


def synthetic_runs(
    law: Law,
    coefficients: dict[str, float],
    student_params: list[float],
    tokens: list[float],
    teacher_losses: list[float],
    noise: float = 0.0,
    seed: int = 0,
    supervised: dict[str, float] | None = None,
) -> Runs:
    """A full grid of runs whose student loss follows ``law`` with ``coefficients``, plus
    Gaussian noise of standard deviation ``noise`` (loss units).

    ``supervised``: for the ``busbridge`` form, the supervised law ``Lsup = E + (A / N^alpha +
    B / D^beta)^gamma`` (keys ``E, A, alpha, B, beta, gamma``) that gives each run's
    ``supervised_loss``.
    """
    grid = np.array([(n, d, t) for n in student_params for d in tokens for t in teacher_losses])
    n, d, t = grid.T
    sup = np.full(len(grid), np.nan)
    if supervised is not None:
        s = supervised
        sup = s["E"] + (s["A"] / n ** s["alpha"] + s["B"] / d ** s["beta"]) ** s["gamma"]
    names = tuple(f"N{a:.3g}-D{b:.3g}-T{c:.3g}" for a, b, c in grid)
    runs = Runs(n, d, t, np.zeros(len(grid)), sup, names)
    clean = law.predict(internal(law, coefficients), runs)
    noisy = clean + np.random.default_rng(seed).normal(0.0, noise, len(grid))
    return Runs(n, d, t, noisy, sup, names)

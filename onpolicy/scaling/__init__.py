"""``onpolicy scaling``: fit a distillation scaling law to a table of your own runs.

    onpolicy scaling --runs runs.csv [--form additive|busbridge] [--bootstrap 200] [--out DIR]

Reads a CSV/JSONL table (``student_params, tokens, teacher_loss, student_loss`` and, for the
published ``busbridge`` form, ``supervised_loss``; see ``onpolicy.scaling.table``), fits the law
(``onpolicy.scaling.laws``), and prints/writes the coefficients with bootstrap intervals, the
held-out prediction error (k-fold, and the largest student predicted from the smaller ones), the
capacity-gap curve and a plot.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from onpolicy.errors import OnpolicyError
from onpolicy.scaling.fit import Fit, HeldOut, Interval, bootstrap, capacity_gap, fit_law
from onpolicy.scaling.laws import LAWS, Law, Runs, get_law
from onpolicy.scaling.report import ScalingReport, analyse, markdown, write_report
from onpolicy.scaling.table import read_runs, runs_from_rows, synthetic_runs

__all__ = [
    "LAWS",
    "Fit",
    "HeldOut",
    "Interval",
    "Law",
    "Runs",
    "ScalingReport",
    "analyse",
    "bootstrap",
    "capacity_gap",
    "fit_law",
    "get_law",
    "main",
    "markdown",
    "read_runs",
    "runs_from_rows",
    "synthetic_runs",
    "write_report",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``onpolicy scaling``: returns the exit status (2 on a bad input)."""
    parser = argparse.ArgumentParser(prog="onpolicy scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="CSV or JSONL table of runs")
    parser.add_argument("--form", default="additive", choices=sorted(LAWS), help="law form")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples (0: none)")
    parser.add_argument("--folds", type=int, default=5, help="k-fold held-out error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for scaling.md/.json/.png")
    args = parser.parse_args(argv)
    try:
        runs = read_runs(args.runs)
        report = analyse(runs, args.form, args.bootstrap, args.folds, args.seed)
    except OnpolicyError as exc:
        print(f"onpolicy scaling: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(report, args.runs))
    if args.out:
        for kind, path in write_report(report, runs, Path(args.out), args.runs).items():
            print(f"{kind}: {path}")
    return 0

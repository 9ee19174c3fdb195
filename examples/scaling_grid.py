"""Fit the distillation scaling law to a grid of tiny runs (configs/scaling/tiny_grid.yaml): run
the grid (or read a table of your own runs with ``--runs``), fit both forms, write the reports.

    python examples/scaling_grid.py --config configs/scaling/tiny_grid.yaml --out outputs/scaling
    onpolicy scaling --runs outputs/scaling/runs.jsonl --form busbridge      # refit, no training
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onpolicy.scaling import analyse, read_runs, write_report
from onpolicy.scaling.grid import load_grid, run_grid

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/scaling/tiny_grid.yaml")
    parser.add_argument("--runs", default=None, help="an existing runs table (skips the grid)")
    parser.add_argument("--out", default="outputs/scaling")
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = Path(args.runs) if args.runs else out / "runs.jsonl"
    if not args.runs:
        rows = run_grid(load_grid(args.config))
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = read_runs(table)
    for form in ("additive", "busbridge"):
        report = analyse(runs, form, samples=args.bootstrap)
        for kind, path in write_report(report, runs, out / form, str(table)).items():
            print(f"{form} {kind}: {path}")
        print((out / form / "scaling.md").read_text())

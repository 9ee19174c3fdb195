"""Shared by the examples: run a recipe from configs/ and print the evaluation before and after."""

from __future__ import annotations

import sys
from pathlib import Path

from onpolicy.config import load_config
from onpolicy.trainer import TrainResult, train

REPO = Path(__file__).resolve().parents[1]


def run_recipe(name: str, overrides: list[str] | None = None) -> TrainResult:
    """Train ``configs/<name>.yaml`` (command-line ``key=value`` overrides apply) and print a
    before/after table of the evaluation metrics."""
    config = load_config(REPO / "configs" / f"{name}.yaml", overrides or sys.argv[1:])
    result = train(config)
    print(f"\n{name}: {result.steps} steps, student saved to {result.final_dir}")
    print(f"{'metric':32s} {'before':>10s} {'after':>10s}")
    for key in sorted(result.eval_after):
        before = result.eval_before.get(key, float("nan"))
        print(f"{key:32s} {before:10.4f} {result.eval_after[key]:10.4f}")
    return result

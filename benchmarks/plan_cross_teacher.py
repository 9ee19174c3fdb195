"""Planned optimizer steps of equal-FLOPs compare configs before and after the cross-tokenizer
teacher is charged its own tokens (``onpolicy.compare.token_ratio``): the old plan charged it the
student's completion length ``C``, the new one ``q C``. Plans only; nothing is trained.

    python benchmarks/plan_cross_teacher.py configs/compare/arithmetic_cross_hidden.yaml ...
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

_HERE = str(Path(__file__).resolve().parent)  # benchmarks/alignment.py would shadow the package
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onpolicy.compare import budget  # noqa: E402
from onpolicy.compare.config import load_config  # noqa: E402
from onpolicy.compare.evaluate import num_params  # noqa: E402
from onpolicy.compare.model_dirs import resolve_models  # noqa: E402
from onpolicy.compare.training import split_prompts  # noqa: E402
from onpolicy.models import load_model  # noqa: E402
from onpolicy.tasks.base import make_task  # noqa: E402


def plans(path: str) -> tuple[budget.Plan, budget.Plan, dict[str, float]]:
    """(old plan, new plan, q per student kind) of the config at ``path``."""
    cfg = load_config(path)
    dirs = resolve_models(cfg, log=lambda _: None)
    task = make_task(**cfg.task)
    split_prompts(cfg, task)  # the training prompts the run plans on
    n_t = num_params(load_model(dirs.teacher))
    new = budget.plan_runs(cfg, dirs, task, n_t)
    sizes = budget._sizes_by_student(cfg, dirs, task, n_t) if cfg.budget.match == "flops" else {}
    with mock.patch.object(budget, "_teacher_ratio", lambda *a: 1.0):  # the old charge: C
        old = budget.plan_runs(cfg, dirs, task, n_t)
    return old, new, {k: s.teacher_tokens_per_token for k, s in sizes.items()}


def main(paths: list[str]) -> None:
    print("| config | q (teacher tokens / student token) | method | seed | old steps | new steps |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        old, new, q = plans(path)
        qs = ", ".join(f"{k}: {v:.3f}" for k, v in q.items())
        for key, steps in new.steps.items():
            print(f"| {path} | {qs} | {key[0]} | {key[1]} | {old.steps[key]} | {steps} |")
        for seed, flops in new.budget_flops.items():
            if flops is not None:
                print(f"| {path} | {qs} | (budget FLOPs) | {seed} | {old.budget_flops[seed]:.3e} "
                      f"| {flops:.3e} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])

"""The comparison harness: ``onpolicy compare --config configs/compare/<task>.yaml`` and the
quickstart (``onpolicy quickstart`` / ``examples/quickstart.py``).

Every method trains from the same student initialization (or, with ``warm_start``, from each
branch point of a cached warm-up) through ``onpolicy.trainer.train`` (the one training loop) with
the same optimizer and prompts per step, for the same number of optimizer steps or (``budget:
{match: flops, ...}``) the steps that give it the same estimated training FLOPs, is evaluated on
the same held-out prompts (as learning curves with ``eval: {every: N}``), and reports the compute
the trainer counted in two accountings (the teacher's data free / paid). See ``config.py`` (every
key), ``run.py`` (jobs), ``training.py`` (one trainer run, the warm-up, the LR trials),
``methods.py`` (methods -> trainer configs), ``budget.py`` (equal compute), ``accounting.py``
(free / paid), ``curves.py`` (curves and their summaries), ``warm.py`` (warm starts),
``lr_search.py`` (per-method learning rates), ``evaluate.py`` (end-point metrics), ``trl_sft.py``
(the peer: TRL's ``SFTTrainer``), ``report.py`` / ``report_text.py`` / ``curve_plot.py`` (report,
JSON, plots). ``onpolicy compare --config FILE --plan`` prints the planned steps only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onpolicy.compare.config import CompareConfig, load_config, parse_config
from onpolicy.compare.methods import BUILTIN_METHODS, MethodSpec, TrainSettings
from onpolicy.compare.report import Row, aggregate, budget_meta, markdown, write_report
from onpolicy.compare.run import JobResult, output_dir, run_compare
from onpolicy.errors import OnpolicyError

__all__ = [
    "BUILTIN_METHODS",
    "CompareConfig",
    "JobResult",
    "MethodSpec",
    "Row",
    "TrainSettings",
    "compare",
    "load_config",
    "main",
    "parse_config",
    "plan_table",
    "quickstart_main",
]


def compare(cfg: CompareConfig, progress: bool = True, note: str = "") -> tuple[list[Row], dict]:
    """Run the comparison and write its report; returns the rows and the written paths."""
    from onpolicy.tasks.base import make_task

    teacher, jobs, dirs, seconds, plan, extras = run_compare(cfg, progress=progress)
    task = make_task(**cfg.task)
    rows = aggregate(teacher, jobs)
    meta: dict[str, Any] = {
        "task": cfg.task,
        "models": vars(dirs),
        "methods": [vars(m) for m in cfg.methods],
        "steps": cfg.train.steps,
        "budget": budget_meta(plan),
        "teacher_data": cfg.budget.teacher_data,
        "batch_size": cfg.train.batch_size,
        "lr": cfg.train.lr,
        "lr_search": None if cfg.lr_search is None else vars(cfg.lr_search),
        "warm_start": None if cfg.warm_start is None else str(cfg.warm_start),
        "eval_every": cfg.eval_every,
        "max_new_tokens": cfg.train.max_new_tokens,
        "temperature": cfg.train.temperature,
        "seeds": cfg.seeds,
        "workers": cfg.workers,
        "num_eval": len(task.eval_prompts),
        "total_seconds": round(seconds, 1),
        "note": note,
    }
    prompts = [p.text or str(p.messages) for p in task.eval_prompts[:3]]
    paths = write_report(
        rows, jobs, meta, output_dir(cfg), task.metric_name, teacher, extras, prompts
    )
    return rows, paths


def _parser(prog: str, default_config: str | None) -> argparse.ArgumentParser:
    first_paragraph = __doc__.split("\n\n")[0]  # a whole sentence, not its first line
    p = argparse.ArgumentParser(
        prog=prog,
        description=first_paragraph + "\n\nEvery key of the config: onpolicy/compare/config.py.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default=default_config,
        required=default_config is None,
        help="YAML comparison config (see configs/compare/)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print each run's planned steps and FLOPs; train nothing",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=10")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``onpolicy compare --config FILE [key=value ...]``: run, print the table and the paths."""
    args = _parser("onpolicy compare", None).parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.plan:
            print(plan_table(cfg))
            return 0
        rows, paths = compare(cfg, progress=not args.no_progress)
    except OnpolicyError as exc:  # a bad config or budget: one line, no traceback
        print(f"onpolicy compare: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(rows, teacher_data=cfg.budget.teacher_data))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0 if all(r.status == "ok" for r in rows) else 1


def plan_table(cfg: CompareConfig) -> str:
    """The budget plan of ``cfg`` (steps and estimated FLOPs per method and seed), as Markdown."""
    from onpolicy.compare.budget import plan_runs
    from onpolicy.compare.evaluate import num_params
    from onpolicy.compare.model_dirs import resolve_models
    from onpolicy.models import load_model
    from onpolicy.tasks.base import make_task

    dirs = resolve_models(cfg)
    plan = plan_runs(cfg, dirs, make_task(**cfg.task), num_params(load_model(dirs.teacher)))
    out = ["| method | seed | steps | estimated FLOPs |", "|---|---|---|---|"]
    for (method, seed), steps in plan.steps.items():
        flops = plan.estimated_flops[(method, seed)]
        out.append(f"| {method} | {seed} | {steps} | {'–' if flops is None else f'{flops:.3e}'} |")
    w, lr = cfg.warm_start, cfg.lr_search
    if w is not None:
        starts = len(w.branch_at) + int(w.cold)
        out.append(
            f"\nwarm-up: {w.method.name} for {w.steps} steps per seed (cached under "
            f"{w.cache_dir or cfg.output_dir / 'warm'}); every method runs from {starts} start "
            f"points ({'cold, ' if w.cold else ''}{', '.join(map(str, w.branch_at))})"
        )
    if lr is not None:
        out.append(
            f"learning-rate grid {list(lr.grid)}: {lr.steps or cfg.train.steps} steps per trial, "
            f"methods {list(lr.methods) if lr.methods else 'all trained'}, first seed, per start"
        )
    return "\n".join(out)


def quickstart_main(argv: Sequence[str] | None = None) -> int:
    """``onpolicy quickstart``: the arithmetic task's teacher (trained and cached on first use),
    the untouched student, SFT on teacher samples and on-policy reverse KL, same budget; prints a
    before/after table (per start point, with a verdict sentence, when the config warms the
    student first) and where the report and plots are."""
    from onpolicy.compare.report_text import start_labels, verdict
    from onpolicy.quiet import quiet_libraries

    quiet_libraries()  # `make demo` calls this directly, not through the CLI that quiets
    default = Path(__file__).resolve().parents[2] / "configs" / "compare" / "quickstart.yaml"
    args = _parser("onpolicy quickstart", str(default)).parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        rows, paths = compare(cfg, progress=not args.no_progress)
    except OnpolicyError as exc:  # a bad config or budget: one line, no traceback
        print(f"onpolicy quickstart: error: {exc}", file=sys.stderr)
        return 2
    print()
    warm = cfg.warm_start is not None  # the cold quickstart's table stays as the README quotes it
    labels = start_labels(_warm_records(paths))
    print(quickstart_table(rows, cfg.budget.teacher_data if warm else None, labels))
    for start in dict.fromkeys(r.start for r in rows if r.method != "teacher"):
        part = [r for r in rows if r.start == start and r.method != "teacher"]
        label = labels.get(start, start)
        head = f"From the {label} start: " if len({r.start for r in rows}) > 1 else ""
        print(head + verdict(part, cfg.budget.teacher_data).replace("**", ""))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0 if all(r.status == "ok" for r in rows) else 1


_NAMES = {
    "teacher": "teacher",
    "untouched": "student before distillation",
    "sft": "student + SFT on teacher samples (off-policy)",
    "reverse_kl": "student + on-policy reverse KL",
    "gkd": "student + GKD (lambda 0.5: half on-policy)",
}


def _warm_records(paths: dict[str, Any]) -> list[dict[str, Any]]:
    """The warm-up records of the comparison's JSON report (none without one)."""
    path = paths.get("json")
    if not path:
        return []
    return json.loads(Path(path).read_text()).get("warm_up") or []


def quickstart_table(
    rows: Sequence[Row], teacher_data: str | None = None, labels: dict[str, str] | None = None
) -> str:
    """Student vs teacher vs SFT baseline vs on-policy: held-out score, KL and compute. A
    ``start`` column (cold, or the warm-up branch, shown as ``labels[start]`` where given)
    appears when the rows have several starts or a warm one. FLOPs: the trainer's recorded
    training FLOPs, or with ``teacher_data`` (free | paid) that accounting's."""
    starts = {r.start for r in rows if r.method != "teacher"}
    show_start = starts != {"cold"}
    out = [
        ("| start " if show_start else "")
        + "| model | exact match (± sd) | KL to teacher (nats/char) | "
        + (f"train FLOPs (teacher data {teacher_data}) " if teacher_data else "train FLOPs ")
        + "| steps | train s |",
        ("|---" if show_start else "") + "|---|---|---|---|---|---|",
    ]
    for r in rows:
        start = (labels or {}).get(r.start, r.start)
        lead = f"| {'–' if r.method == 'teacher' else start} " if show_start else ""
        name = _NAMES.get(r.method, r.method)
        if r.status != "ok":
            out.append(f"{lead}| {name} | FAILED: {r.error} | | | | |")
            continue
        kl = "–" if r.kl_per_char is None else f"{r.kl_per_char:.4f}"
        flops = getattr(r, f"flops_{teacher_data}") if teacher_data else r.flops
        out.append(
            f"{lead}| {name} | {r.score:.3f} ± {r.score_std:.3f} | {kl} | "
            f"{'–' if not flops else f'{flops:.2e}'} | "
            f"{'–' if not r.steps else f'{r.steps:.0f}'} | "
            f"{'–' if r.seconds is None else f'{r.seconds:.0f}'} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

"""The comparison's outputs: one row per method (mean and spread over seeds), written as a Markdown
table, a JSON file and PNG plots of score against compute."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from onpolicy.compare.budget import Plan
from onpolicy.compare.run import JobResult


@dataclass
class Row:
    """One method aggregated over its seeds (``*_std`` = sample standard deviation, 0 for one)."""

    method: str
    status: str  # ok | failed | partial (some seeds failed)
    seeds: int
    score: float | None
    score_std: float | None
    retained: float | None  # score / teacher score
    kl_per_char: float | None
    kl_std: float | None
    agreement: float | None
    student_tokens: float | None
    teacher_tokens: float | None
    flops: float | None
    seconds: float | None
    params: int | None
    disk_mb: float | None
    latency_ms: float | None
    tokens_per_s: float | None
    error: str | None
    steps: float | None = None  # optimizer steps (mean over seeds; they differ at equal FLOPs)
    start: str = "cold"  # cold, or the warm-up branch the runs started from
    steps_per_seed: str = ""  # "117 / 118" when the seeds' budgets differ, else one value
    flops_free: float | None = None  # training FLOPs, teacher's data free (mean over seeds)
    flops_paid: float | None = None  # ... paid (accounting.py)
    lr: float | None = None  # the learning rate it trained with (lr_search's choice or train.lr)
    repetition: float | None = None  # greedy held-out completions: repeated trigram share (mean)
    repetition_std: float | None = None
    cut_share: float | None = None  # ... share cut at the length limit (mean over seeds)


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(teacher: JobResult, jobs: Sequence[JobResult]) -> list[Row]:
    """Teacher row first, then one row per method in config order."""
    rows = [
        Row(
            "teacher",
            "ok",
            1,
            teacher.score,
            0.0,
            1.0 if teacher.score else None,
            0.0,
            0.0,
            1.0,
            None,
            None,
            None,
            None,
            teacher.params,
            teacher.disk_bytes / 1e6 if teacher.disk_bytes else None,
            1e3 * teacher.latency_s,
            teacher.tokens_per_s,
            None,
            repetition=teacher.repetition,
            repetition_std=None if teacher.repetition is None else 0.0,
            cut_share=teacher.cut_share,
        )
    ]
    for start, method in dict.fromkeys((j.start, j.method) for j in jobs):
        runs = [j for j in jobs if j.method == method and j.start == start]
        ok = [j for j in runs if j.status == "ok"]
        status = "ok" if len(ok) == len(runs) else ("failed" if not ok else "partial")
        error = next((j.error for j in runs if j.status == "failed"), None)
        score, score_std = _mean_std([j.score for j in ok])
        kl, kl_std = _mean_std([j.kl_per_char for j in ok])
        rep, rep_std = _mean_std([j.repetition for j in ok])

        def m(key: str, src: Sequence[Any] = ok) -> float | None:
            return _mean_std([_get(j, key) for j in src])[0]

        retained = (score / teacher.score) if score is not None and teacher.score else None
        params = ok[0].params if ok else None
        disk = ok[0].disk_bytes / 1e6 if ok and ok[0].disk_bytes else None
        latency = m("latency_s")
        rows.append(
            Row(
                method,
                status,
                len(runs),
                score,
                score_std,
                retained,
                kl,
                kl_std,
                m("agreement"),
                m("student_tokens"),
                m("teacher_tokens"),
                m("flops"),
                m("seconds"),
                params,
                disk,
                None if latency is None else 1e3 * latency,
                m("tokens_per_s"),
                error,
                m("steps"),
                start,
                " / ".join(dict.fromkeys(str(j.steps) for j in ok)) if ok else "",
                m("flops_free"),
                m("flops_paid"),
                ok[0].lr if ok else None,
                rep,
                rep_std,
                m("cut_share"),
            )
        )
    return rows


def _get(job: JobResult, key: str) -> float | None:
    b = job.budget
    if key == "student_tokens":
        return b.get("student_train_tokens", 0) + b.get("student_gen_tokens", 0)
    if key in ("teacher_tokens", "seconds"):
        return b.get(key)
    return getattr(job, key)


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(rows: Sequence[Row], header: str = "", teacher_data: str = "paid") -> str:
    """The report table (failed methods stay in it, with their error); ``teacher_data``: the
    accounting marked as the headline's (both are shown). Repetition and cut at limit: the greedy
    held-out completions' repeated-trigram share and share cut at the length limit (``evaluate.
    completion_diagnostics``), next to the KL so a collapse into loops is seen."""
    mark = {"free": "", "paid": ""}
    mark[teacher_data] = " ★"
    cols = (
        "| method | status | seeds | score (± sd) | retained | KL/char (± sd) | agree | "
        f"FLOPs, teacher data free{mark['free']} | FLOPs, teacher data paid{mark['paid']} | "
        "steps per seed | lr | train s | repetition (± sd) | cut at limit |"
    )
    rule = "|" + "---|" * 14
    lines = [header, "", cols, rule] if header else [cols, rule]
    for r in rows:
        score = "–" if r.score is None else f"{r.score:.3f} ± {r.score_std:.3f}"
        kl = "–" if r.kl_per_char is None else f"{r.kl_per_char:.4f} ± {r.kl_std:.4f}"
        steps = r.steps_per_seed if r.steps else "–"
        rep = "–" if r.repetition is None else f"{r.repetition:.3f} ± {r.repetition_std:.3f}"
        lines.append(
            f"| {r.method} | {r.status} | {r.seeds} | {score} | {_fmt(r.retained, '.0%')} | {kl} | "
            f"{_fmt(r.agreement, '.2f')} | {_fmt(r.flops_free or None, '.2e')} | "
            f"{_fmt(r.flops_paid or None, '.2e')} | {steps} | {_fmt(r.lr, '.1e')} | "
            f"{_fmt(r.seconds, '.0f')} | {rep} | {_fmt(r.cut_share, '.0%')} |"
        )
    failed = [r for r in rows if r.error]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {r.method}: {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


def deployment_table(rows: Sequence[Row]) -> str:
    """Token positions, size and speed per method."""
    lines = [
        "| method | student tok | teacher tok | params | disk MB | latency ms | tok/s |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        lines.append(
            f"| {_label(r)} | {_fmt(r.student_tokens, ',.0f')} | {_fmt(r.teacher_tokens, ',.0f')} "
            f"| {_fmt(r.params, ',')} | {_fmt(r.disk_mb, '.2f')} | {_fmt(r.latency_ms, '.0f')} | "
            f"{_fmt(r.tokens_per_s, ',.0f')} |"
        )
    return "\n".join(lines) + "\n"


def plot(
    rows: Sequence[Row], path: Path, metric: str = "score", teacher_data: str = "paid"
) -> Path | None:
    """End points: score (mean ± sd over seeds) against recorded training FLOPs (accounting
    ``teacher_data``) and wall time, for the runs of the first start point (the cold start when
    there is one; curves.png shows every start); None when matplotlib is missing or no method
    has both."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    first = next((r.start for r in rows if r.method != "teacher"), "cold")
    rows = [r for r in rows if r.start == first or r.method == "teacher"]
    attr_flops = f"flops_{teacher_data}"
    pts = [r for r in rows if r.score is not None and getattr(r, attr_flops)]  # trained methods
    flat = [r for r in rows if r.score is not None and r.method != "teacher" and r not in pts]
    if not pts:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, attr, label in (
        (axes[0], attr_flops, f"recorded training FLOPs (teacher data {teacher_data})"),
        (axes[1], "seconds", "wall time (s)"),
    ):
        for i, r in enumerate(flat):  # untouched students: no training compute, a level line
            ax.axhline(r.score, ls=":", c=f"C{i + 5}", lw=1.2, label=f"{_label(r)} (no training)")
        for r in pts:
            x = max(getattr(r, attr) or 0.0, 1e-3)
            ax.errorbar(x, r.score, yerr=r.score_std, fmt="o", capsize=3, label=_label(r))
            ax.annotate(
                _label(r), (x, r.score), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
        teacher = next((r for r in rows if r.method == "teacher"), None)
        if teacher is not None and teacher.score is not None:
            ax.axhline(teacher.score, ls="--", c="gray", lw=1, label="teacher")
        _x_scale(ax, [getattr(r, attr) or 0.0 for r in pts])
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{metric} against compute (mean ± sd over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(r: Row) -> str:
    return r.method if r.start == "cold" else f"{r.method} [{r.start}]"


def _x_scale(ax: Any, xs: Sequence[float]) -> None:
    """Log scale when the points span a factor of 10 or more; else linear from 0 (at equal FLOPs
    every point sits at about the same x, where log-scale tick labels would overlap)."""
    lo, hi = max(min(xs, default=1.0), 1e-3), max(max(xs, default=1.0), 1e-3)
    if hi / lo >= 10:
        ax.set_xscale("log")
        return
    ax.set_xlim(0, hi * 1.15)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))


def write_report(
    rows: Sequence[Row],
    jobs: Sequence[JobResult],
    meta: dict[str, Any],
    out: Path,
    metric: str,
    teacher: JobResult | None = None,
    extras: Any = None,
    sample_prompts: Sequence[str] = (),
) -> dict[str, Path]:
    """``report.md``, ``report.json`` (rows + every job + meta), ``score_vs_compute.png`` and,
    with learning curves, ``curves.png``."""
    from onpolicy.compare import report_text as text
    from onpolicy.compare.curve_plot import plot_curves, plot_warm_up
    from onpolicy.compare.report_forward import forward_table

    teacher_data = meta.get("teacher_data", "paid")
    paths = {"markdown": out / "report.md", "json": out / "report.json"}
    png = plot(rows, out / "score_vs_compute.png", metric, teacher_data)
    if png is not None:
        paths["plot"] = png
    groups = curve_groups(jobs)
    titles = start_titles(extras)
    t_score = teacher.score if teacher is not None else None
    curves = plot_curves(groups, out / "curves.png", t_score, teacher_data, metric, titles)
    if curves is not None:
        paths["curves"] = curves
    doc = [text.heading(meta, budget_line(meta), metric), ""]
    head = [r for r in rows if r.method == "teacher"]
    for start in dict.fromkeys(r.start for r in rows if r.method != "teacher"):
        part = [r for r in rows if r.start == start and r.method != "teacher"]
        doc += [f"## {titles.get(start, start)}", "", text.verdict(part, teacher_data), ""]
        doc += [markdown(head + part, teacher_data=teacher_data)]
    if curves is not None:
        doc += ["## Learning curves", "", "![curves](curves.png)", ""]
        methods = meta.get("methods", [])
        ref = next((m["name"] for m in methods if m.get("objective") == "sft"), "sft")
        doc += [text.curve_table(groups, t_score, teacher_data, ref), ""]
        forward = forward_table(groups, teacher_data)  # eval.forward_nll: coverage of the teacher
        doc += ["### Forward measure", "", forward, ""] if forward else []
    warm = getattr(extras, "warm", None)
    if warm and plot_warm_up(warm, out / "warm_up.png", teacher_data) is not None:
        paths["warm_up"] = out / "warm_up.png"
    doc += _extras_sections(extras)
    doc += ["## Per seed", "", text.per_seed_table(jobs), ""]
    doc += ["## Sample completions (greedy, first seed)", ""]
    doc += [text.samples(jobs, sample_prompts, teacher), ""]
    doc += ["## What the FLOPs count", "", text.flops_note(meta), ""]
    doc += ["## Compute and deployment", "", deployment_table(rows), meta.get("note", "")]
    paths["markdown"].write_text("\n".join(doc) + "\n")
    paths["json"].write_text(
        json.dumps(
            {
                "meta": meta,
                "rows": [asdict(r) for r in rows],
                "jobs": [asdict(j) for j in jobs],
                "warm_up": getattr(extras, "warm", []),
                "lr_trials": getattr(extras, "lr_trials", []),
            },
            indent=1,
            default=str,
        )
    )
    return paths


def curve_groups(jobs: Sequence[JobResult]) -> dict[str, dict[str, list[list[Any]]]]:
    """start -> method -> one list of ``CurvePoint`` per seed (runs without a curve left out)."""
    from onpolicy.compare.curves import CurvePoint

    out: dict[str, dict[str, list[list[Any]]]] = {}
    for j in jobs:
        if j.status == "ok" and j.curve:
            pts = [CurvePoint(**p) for p in j.curve]
            out.setdefault(j.start, {}).setdefault(j.method, []).append(pts)
    return out


def start_titles(extras: Any) -> dict[str, str]:
    """Section titles of the start points (the warm-up's branch steps per seed); a plateau that
    some seed's warm-up never reached (it branched at its last step) is named so."""
    steps: dict[str, list[str]] = {}
    missed: set[str] = set()
    method = ""
    for record in getattr(extras, "warm", None) or []:
        method = record["method"]
        for b in record["branches"]:
            steps.setdefault(b["name"], []).append(str(b["step"]))
            if not b.get("reached", True):
                missed.add(b["name"])
    titles = {"cold": "Cold start (the untouched student)"}
    for name, at in steps.items():
        kind = "branch"
        if name == "plateau":
            kind = "at its last step (plateau not reached)" if name in missed else "at its plateau"
        titles[name] = f"Warm start: {method} warm-up {kind}, step {' / '.join(at)} per seed"
    return titles


def _extras_sections(extras: Any) -> list[str]:
    """The warm-up and learning-rate sections (empty without them)."""
    from onpolicy.compare import report_text as text

    out = []
    if getattr(extras, "warm", None):
        out += ["## Warm-up", "", "![warm-up](warm_up.png)", "", text.warm_table(extras.warm), ""]
    if getattr(extras, "lr_trials", None):
        out += ["## Learning rates (chosen on the validation split)", ""]
        out += [text.lr_table(extras.lr_trials, extras.lr_chosen), ""]
    return out


def budget_meta(plan: Plan) -> dict[str, Any]:
    """The budget plan as JSON-able report metadata."""
    return {
        "match": plan.spec.match,
        "reference": plan.spec.reference,
        "flops": plan.budget_flops,
        "completion_tokens": plan.spec.completion_tokens,
        "steps": {f"{m}/seed{s}": n for (m, s), n in plan.steps.items()},
        "estimated_flops": {f"{m}/seed{s}": f for (m, s), f in plan.estimated_flops.items()},
    }


def budget_line(meta: dict[str, Any]) -> str:
    """Which budget produced the table: equal optimizer steps, or equal estimated FLOPs."""
    b = meta.get("budget") or {"match": "steps"}
    per_step = f"x {meta['batch_size']} prompts"
    if b["match"] == "steps":
        return f"{meta['steps']} optimizer steps {per_step} for every method"
    flops = sorted({f for f in (b.get("flops") or {}).values() if f is not None})
    amount = " / ".join(f"{f:.2e}" for f in flops) or "?"
    ref = f"; reference {b['reference']} at {meta['steps']} steps" if b.get("reference") else ""
    return (
        f"equal estimated training FLOPs ({amount} per run{ref}), optimizer steps {per_step} "
        "per method in the table"
    )

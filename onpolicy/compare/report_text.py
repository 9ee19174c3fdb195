"""The prose parts of the comparison's Markdown report: a readable heading, a verdict sentence per
table, per-seed rows, sample completions, the learning-curve summary, the chosen learning rates,
the warm-up, and what the FLOPs columns count. ``report.write_report`` assembles them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onpolicy.compare.curves import (
    CurvePoint,
    auc,
    best,
    flops_to_reach,
    has_metric,
    mean_curve,
    warm_metric,
)

ACCOUNTING = {
    "paid": "the teacher's data paid (each distinct teacher sample a method trained on is charged "
    "at the teacher's generation FLOPs)",
    "free": "the teacher's data free (teacher samples cost nothing, as if the dataset existed)",
}


def _short(d: dict[str, Any]) -> str:
    rest = [f"{k} {v}" for k, v in d.items() if k != "name"]
    return f"{d.get('name', '?')}" + (f" ({', '.join(rest)})" if rest else "")


def heading(meta: dict[str, Any], budget: str, metric: str) -> str:
    """The title and one line each for the task, budget, seeds and accounting."""
    seeds = ", ".join(str(s) for s in meta.get("seeds", []))
    lr = meta.get("lr")
    lr_line = f"learning rate {lr:g}" if lr is not None else ""
    if meta.get("lr_search"):
        lr_line = "learning rate per method from a grid on the validation split (see below)"
    teacher_data = meta.get("teacher_data", "paid")
    lines = [
        f"# {_short(meta['task'])}: " + ", ".join(m["name"] for m in meta.get("methods", [])),
        "",
        f"- **Task:** {_short(meta['task'])}; held-out score: {metric} on "
        f"{meta.get('num_eval', '?')} prompts never trained on or chosen on",
        f"- **Budget:** {budget}; {lr_line}",
        f"- **Seeds:** {seeds}",
        f"- **FLOPs in headlines and verdicts:** {ACCOUNTING[teacher_data]}; the other "
        "accounting is in the tables too",
    ]
    if meta.get("total_seconds") is not None:
        lines.append(f"- **Wall time of the whole comparison:** {meta['total_seconds']:.0f} s")
    return "\n".join(lines)


def _value(r: Any) -> tuple[float, float, str] | None:
    """(value, sd, what) to rank by, higher is better: the score, else minus the KL/char."""
    if r.score is not None:
        return r.score, r.score_std or 0.0, "score"
    if r.kl_per_char is not None:
        return -r.kl_per_char, r.kl_std or 0.0, "KL/char"
    return None


def verdict(rows: Sequence[Any], teacher_data: str) -> str:
    """One sentence: which method leads, by how much, against the seed spread, at what FLOPs."""
    trained = [r for r in rows if r.method != "teacher" and r.status == "ok" and _value(r)]
    if len(trained) < 2:
        return "Verdict: fewer than two methods finished; nothing to compare."
    ranked = sorted(trained, key=lambda r: _value(r)[0], reverse=True)
    a, b = ranked[0], ranked[1]
    (va, sa, what), (vb, sb, _) = _value(a), _value(b)
    gap = va - vb
    shown = (lambda v: f"{v:.3f}") if what == "score" else (lambda v: f"{-v:.4f}")
    if gap == 0:
        tied = [r.method for r in trained if _value(r)[0] == va]
        return f"Verdict: {', '.join(tied)} tie on {what} ({shown(va)}); no method leads."
    spread = max(sa, sb)
    if a.seeds < 2:
        strength = "one seed: no spread measured"
    elif gap > 2 * spread:
        strength = f"more than twice the larger seed sd ({spread:.3f}): a clear gap"
    else:
        strength = f"within twice the larger seed sd ({spread:.3f}): not a clear gap"
    fa, fb = (getattr(x, f"flops_{teacher_data}") for x in (a, b))
    ratio = f" It spent {fa / fb:.2f}x {b.method}'s FLOPs." if fa and fb else ""
    return (
        f"Verdict: **{a.method}** leads on {what} ({shown(va)}) ahead of {b.method} "
        f"({shown(vb)}) by {abs(gap):.3f}, {strength}.{ratio}"
    )


def per_seed_table(jobs: Sequence[Any]) -> str:
    lines = [
        "| start | method | seed | status | score | KL/char | steps | lr | FLOPs free | "
        "FLOPs paid | repetition | cut at limit |",
        "|" + "---|" * 12,
    ]
    for j in jobs:
        lines.append(
            f"| {j.start} | {j.method} | {j.seed} | {j.status} | {_f(j.score, '.3f')} | "
            f"{_f(j.kl_per_char, '.4f')} | {_f(j.steps, 'd')} | {_f(j.lr, '.1e')} | "
            f"{_f(j.flops_free, '.2e')} | {_f(j.flops_paid, '.2e')} | "
            f"{_f(getattr(j, 'repetition', None), '.3f')} | "
            f"{_f(getattr(j, 'cut_share', None), '.0%')} |"
        )
    return "\n".join(lines)


def _f(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def samples(jobs: Sequence[Any], prompts: Sequence[str], teacher: Any, k: int = 3) -> str:
    """The first ``k`` held-out prompts with the teacher's and each method's greedy completion
    (first seed, every start point)."""
    seen, out = set(), []
    for i, prompt in enumerate(prompts[:k]):
        out += [f"**Prompt {i + 1}:** `{_one_line(prompt)}`", ""]
        if teacher is not None and len(teacher.samples) > i:
            out.append(f"- teacher: `{_one_line(teacher.samples[i])}`")
        for j in jobs:
            key = (j.start, j.method, i)
            if j.status != "ok" or key in seen or len(j.samples) <= i:
                continue
            seen.add(key)
            where = "" if j.start == "cold" else f" [{j.start}]"
            out.append(f"- {j.method}{where}: `{_one_line(j.samples[i])}`")
        out.append("")
    return "\n".join(out)


def _one_line(text: str) -> str:
    return text.replace("\n", "⏎").replace("`", "'")[:200]


def flops_note(meta: dict[str, Any]) -> str:
    """What the FLOPs columns count, and why the plan's estimate differs from the record."""
    b = meta.get("budget") or {}
    est = ""
    if b.get("match") == "flops":
        est = (
            " The budget plan is an *estimate* made before training: it assumes every completion "
            f"is {b.get('completion_tokens') or meta.get('max_new_tokens')} tokens long "
            "(budget.completion_tokens, else train.max_new_tokens). The tables show the FLOPs the "
            "trainer *recorded*: real completions stop earlier (and on-policy ones at other "
            "lengths than the teacher's), so recorded FLOPs are lower than estimated; the plan's "
            "per-run estimates are in report.json (meta.budget.estimated_flops)."
        )
    return (
        "FLOPs count training only, in the trainer's formula (ComputeBudget.flops): 6 N_student "
        "per trained position, 2 N_student per generated position, 2 N_teacher per teacher "
        "position. *Teacher data free*: the teacher's samples for SFT, supervised KD and GKD's "
        "off-policy share cost nothing. *Teacher data paid*: each distinct teacher sample a run "
        "trained on is charged at the teacher's generation FLOPs. Evaluation, the learning-rate "
        "trials and (for warm starts) the warm-up are not in a method's FLOPs; the warm-up's cost "
        "is given with its branch points." + est
    )


def curve_table(
    groups: dict[str, dict[str, list[list[CurvePoint]]]],
    teacher_score: float | None,
    teacher_data: str,
    reference: str = "sft",
) -> str:
    """Per start point and method: best score, FLOPs to reach the reference method's best score
    and 90% of the teacher's, and the mean score over a common FLOPs range (AUC). Without a task
    metric (no score on any curve): the same on KL/byte, lower being better (``kl_curve_table``)."""
    if not any(has_metric(c, "score") for m in groups.values() for c in m.values()):
        return kl_curve_table(groups, teacher_data, reference)
    target90 = None if teacher_score is None else 0.9 * teacher_score
    lines = [
        f"| start | method | best score | FLOPs to reach {reference}'s best | FLOPs to reach 90% "
        "of the teacher | mean score over [0, F] (AUC / F) | F | repetition, cut at the last "
        "evaluation |",
        "|" + "---|" * 8,
    ]
    for start, methods in groups.items():
        means = {m: mean_curve(c, teacher_data) for m, c in methods.items()}
        means = {m: p for m, p in means.items() if p}
        if not means:
            continue
        ref_best = best(means[reference]) if reference in means else None
        common = min(p[-1].x for p in means.values())
        for m, pts in means.items():
            lines.append(
                f"| {start} | {m} | {_f(best(pts), '.3f')} | "
                f"{_f(flops_to_reach(pts, ref_best), '.2e')} | "
                f"{_f(flops_to_reach(pts, target90), '.2e')} | {_f(auc(pts, common), '.3f')} | "
                f"{common:.2e} | {diagnostics_at(methods[m], teacher_data, pts[-1].step)} |"
            )
    return "\n".join(lines)


def kl_curve_table(
    groups: dict[str, dict[str, list[list[CurvePoint]]]], teacher_data: str, reference: str = "sft"
) -> str:
    """``curve_table`` for a task without a metric: per start point and method, the lowest
    seed-mean KL(student || teacher) per byte on the held-out prompts, the FLOPs at which it first
    reaches the reference method's lowest, its mean over a common FLOPs range, the lowest
    teacher NLL per byte of the student's completions, and the completions' repetition rate and
    share cut at the length limit at the lowest KL/byte and at the end (``diagnostics_at``)."""
    lines = [
        f"| start | method | lowest KL/byte | FLOPs to reach {reference}'s lowest KL/byte | "
        "mean KL/byte over [0, F] | KL/byte at the last evaluation | lowest teacher NLL/byte | F | "
        "repetition, cut at the lowest KL/byte | repetition, cut at the last evaluation |",
        "|" + "---|" * 10,
    ]
    for start, methods in groups.items():
        means = {m: mean_curve(c, teacher_data, "kl_per_byte") for m, c in methods.items()}
        means = {m: p for m, p in means.items() if p}
        if not means:
            continue
        ref_best = best(means[reference], lower=True) if reference in means else None
        common = min(p[-1].x for p in means.values())
        for m, pts in means.items():
            nll = best(mean_curve(methods[m], teacher_data, "teacher_nll_per_byte"), lower=True)
            lowest = min(pts, key=lambda p: p.y).step
            lines.append(
                f"| {start} | {m} | {_f(best(pts, lower=True), '.4f')} | "
                f"{_f(flops_to_reach(pts, ref_best, lower=True), '.2e')} | "
                f"{_f(auc(pts, common), '.4f')} | {pts[-1].y:.4f} ± {pts[-1].sd:.4f} | "
                f"{_f(nll, '.4f')} | {common:.2e} | "
                f"{diagnostics_at(methods[m], teacher_data, lowest)} | "
                f"{diagnostics_at(methods[m], teacher_data, pts[-1].step)} |"
            )
    return "\n".join(lines)


def diagnostics_at(curves: Sequence[Sequence[CurvePoint]], teacher_data: str, step: int) -> str:
    """``"<repetition> / <cut share>"`` of the seed-mean curves at ``step`` (``–`` where the
    curves do not hold them): a KL that falls while these rise is a collapse into loops."""
    cells = []
    for attr, spec in (("repetition", ".3f"), ("cut_share", ".0%")):
        at = [p.y for p in mean_curve(curves, teacher_data, attr) if p.step == step]
        cells.append(_f(at[0] if at else None, spec))
    return " / ".join(cells)


def warm_table(records: Sequence[dict[str, Any]]) -> str:
    """Per seed: each branch point's step, validation score there (KL/byte for a task without a
    metric), warm-up FLOPs to it."""
    key, name = warm_metric(records)
    fmt = ".3f" if key == "score" else ".4f"
    lines = [
        "Validation split (training prompts held out), evaluated every warm_start.every steps. "
        "Plateau: the first evaluation at which the best score so far beats the best of "
        "plateau.window evaluations earlier by less than plateau.min_gain, once the best score "
        "has risen at least plateau.min_gain above the first evaluation.",
        "",
        f"| seed | branch | step | validation {name} | warm-up FLOPs free | warm-up FLOPs paid | "
        "note |",
        "|" + "---|" * 7,
    ]
    for r in records:
        scores = {p["step"]: p.get(key) for p in r["curve"]}
        for b in r["branches"]:
            note = "" if b["reached"] else "plateau not reached: last step"
            if r.get("cached"):
                note = (note + "; " if note else "") + "reused from the cache"
            lines.append(
                f"| {r['seed']} | {b['name']} | {b['step']} | {_f(scores.get(b['step']), fmt)} "
                f"| {b['flops']['free']:.2e} | {b['flops']['paid']:.2e} | {note} |"
            )
    return "\n".join(lines)


def start_labels(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Table labels of the warm-up's branch names that would mislead as they are: a ``plateau``
    that a seed's warm-up never reached (it branched at its last step) is labelled by that step,
    ``"step 1000 (plateau not reached)"``, or ``"plateau (not reached by every seed: step
    1000)"`` when other seeds did reach it. Names not in the result keep their own name.
    ``records``: the report's ``warm_up`` records."""
    missed: dict[str, list[str]] = {}
    reached: set[str] = set()
    for r in records:
        for b in r["branches"]:
            if b.get("reached", True):
                reached.add(b["name"])
            else:
                missed.setdefault(b["name"], []).append(str(b["step"]))
    out = {}
    for name, at in missed.items():
        steps = " / ".join(dict.fromkeys(at))
        out[name] = (
            f"{name} (not reached by every seed: step {steps})"
            if name in reached
            else f"step {steps} (plateau not reached)"
        )
    return out


def lr_table(trials: Sequence[dict[str, Any]], chosen: dict[tuple[str, str], float]) -> str:
    """Per (start, method): every grid value's validation value (higher is better: a score, or
    minus a KL / NLL, by the trials' ``lr_search.criterion``) and the chosen rate."""
    from onpolicy.compare.lr_search import validation_value

    grid = sorted({t["lr"] for t in trials})
    lines = [
        "| start | method | " + " | ".join(f"lr {g:.1e}" for g in grid) + " | chosen |",
        "|" + "---|" * (len(grid) + 3),
    ]
    cells: dict[tuple[str, str], dict[float, float]] = {}
    for t in trials:
        value = validation_value(t["metrics"], t.get("criterion", "auto"))
        cells.setdefault((t["start"], t["method"]), {})[t["lr"]] = value
    for (start, method), values in cells.items():
        row = " | ".join(_f(values.get(g), ".3f") for g in grid)
        lines.append(f"| {start} | {method} | {row} | **{chosen[(method, start)]:.1e}** |")
    return "\n".join(lines)

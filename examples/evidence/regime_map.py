"""Issue 11's regime map from ``docs/results/regime-map.json``: every on-policy vs continued-SFT
cell measured so far, as Markdown tables and a figure of the paired differences.

    python examples/evidence/regime_map.py                       # tables to stdout
    python examples/evidence/regime_map.py --update docs/results/regime-map.md \
        --figure docs/results/regime-map.png                     # the committed report

The data file is transcribed by hand from the committed reports (each cell names its report). An
arm's ``diff`` is arm - continued SFT on the cell's metric, paired by seed: ``per_seed`` (the
report's per-seed differences, seed order) when the report prints them, else ``mean``/``sd``/``n``
as the report prints them. Two verdict rules are computed, never copied:

- **paired** (``examples/evidence/report.py::paired_rule``, the rule of every evidence report's
  regime table): win / loss when the paired mean difference is beyond 2 standard errors
  (sd / sqrt(n)), else tie.
- **compare's** (``onpolicy/compare/report_text.py::verdict``, the sentence the harness writes under
  each table): a "clear gap" when two methods' mean scores differ by more than twice the larger of
  their two seed sds (unpaired); applied here to each arm against continued SFT.

For a metric where lower is better (KL/char), both rules read the sign the other way round.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from examples.evidence.report import paired_rule

DATA = Path("docs/results/regime-map.json")
CELL_FIELDS = (
    "id", "group", "label", "reports", "task", "output_tokens", "teacher", "student", "ratio",
    "teacher_samples_right", "start", "seeds", "budget", "metric", "higher_is_better", "arms",
    "flops_to_sft_best", "kl_gap", "command", "wall",
)  # fmt: skip
ARM_NAMES = {"reverse_kl": "reverse KL", "gkd": "GKD", "gold": "GOLD", "next_byte": "next-byte"}
ACCOUNTINGS = ("paid", "free", "charged", "steps")
START_KINDS = ("cold", "mid-climb", "plateau", "other")
RULE_WORDS = ("win", "tie", "loss")


def load(path: Path = DATA) -> dict[str, Any]:
    """The data file, checked: every cell has every field, every arm a known name, accounting
    and either a measured difference or the words 'not measured'."""
    data = json.loads(Path(path).read_text())
    groups = data.get("groups", {})
    for cell in data["cells"]:
        missing = [f for f in CELL_FIELDS if f not in cell]
        if missing:
            raise ValueError(f"regime map cell {cell.get('id', '?')!r} lacks {', '.join(missing)}")
        if cell["group"] not in groups:
            raise ValueError(f"cell {cell['id']!r}: group {cell['group']!r} not in 'groups'")
        if cell["start"].get("kind") not in START_KINDS:
            raise ValueError(f"cell {cell['id']!r}: start kind must be one of {START_KINDS}")
        for arm in cell["arms"]:
            if arm.get("name") not in ARM_NAMES or arm.get("accounting") not in ACCOUNTINGS:
                raise ValueError(f"cell {cell['id']!r}: arm {arm!r} has an unknown name/accounting")
            if diff_stats(arm) is None and "not measured" not in arm.get("text", ""):
                raise ValueError(f"cell {cell['id']!r}: arm {arm['name']} has no difference and "
                                 "does not say 'not measured'")  # fmt: skip
    return data


def diff_stats(arm: dict[str, Any]) -> tuple[float, float, int] | None:
    """(mean, sample sd, seeds) of the paired difference arm - SFT; None when not measured."""
    xs = arm.get("per_seed")
    if xs:
        return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)
    if arm.get("mean") is None:
        return None
    return arm["mean"], arm["sd"], arm["n"]


def _mean_sd(side: dict[str, Any] | None) -> tuple[float, float] | None:
    if not side:
        return None
    xs = side.get("per_seed")
    if xs:
        return statistics.mean(xs), statistics.stdev(xs)
    return side["mean"], side["sd"]


def paired_verdict(arm: dict[str, Any], higher_is_better: bool) -> str:
    """The paired rule's word for this arm (``?`` under 2 seeds, ``–`` when not measured)."""
    stats = diff_stats(arm)
    if stats is None:
        return "–"
    mean, sd, n = stats
    return paired_rule(mean if higher_is_better else -mean, sd, n)


def compare_verdict(arm: dict[str, Any], higher_is_better: bool) -> str:
    """``onpolicy compare``'s unpaired rule on this arm against continued SFT: win / loss when the
    means differ by more than twice the larger of the two seed sds, else tie; ``–`` when the
    report gives no per-method sds; ``?`` under 2 seeds."""
    a, s = _mean_sd(arm.get("arm")), _mean_sd(arm.get("sft"))
    stats = diff_stats(arm)
    if a is None or s is None:
        return "–"
    n = stats[2] if stats is not None else arm.get("n", 2)
    if n < 2:
        return "?"
    gap = (a[0] - s[0]) * (1 if higher_is_better else -1)
    if abs(gap) > 2 * max(a[1], s[1]):
        return "win" if gap > 0 else "loss"
    return "tie"


def diff_text(arm: dict[str, Any], higher_is_better: bool) -> str:
    """'+0.103 ± 0.019 win' (the report's own numbers and the paired rule's word)."""
    stats = diff_stats(arm)
    if stats is None:
        q = compare_verdict(arm, higher_is_better)
        rule = f"; compare's rule: {q if q == 'tie' else f'**{q}**'}" if q in RULE_WORDS else ""
        return arm.get("text", "not measured") + rule
    mean, sd, n = stats
    shown = arm.get("text") or (f"{mean:+.3f}" + (f" ± {sd:.3f}" if n > 1 else "") + " (derived)")
    word = paired_verdict(arm, higher_is_better)
    word = "1 seed: no verdict" if word == "?" else f"**{word}**" if word != "tie" else word
    extra = " (degenerate)" if arm.get("degenerate") else ""
    said = arm.get("report_verdict")
    if said and said != paired_verdict(arm, higher_is_better):
        extra += f" (report: {said})"
    return f"{shown} {word}{extra}"


def arm_cell(cell: dict[str, Any], column: str) -> str:
    """Everything measured for one arm column: paid first, then the others."""
    arms = [a for a in cell["arms"] if a["column"] == column]
    if not arms:
        return "to be filled" if cell.get("pending") else "not measured"
    parts = []
    for arm in sorted(arms, key=lambda a: ACCOUNTINGS.index(a["accounting"])):
        name = "" if arm["name"] in ("reverse_kl", "gkd") else f"{ARM_NAMES[arm['name']]}, "
        label = {"steps": "equal steps", "charged": "samples charged"}.get(
            arm["accounting"], arm["accounting"]
        )
        parts.append(f"{name}{label}: {diff_text(arm, cell['higher_is_better'])}")
    return "; ".join(parts)


def _link(cell: dict[str, Any]) -> str:
    links = ", ".join(f"[{r}]({r})" if r.endswith(".md") else r for r in cell["reports"])
    branch = f"; branch `{cell['branch']}`" if cell.get("branch") else ""
    return f"**{cell['id']}** {cell['label']} ({links}{branch})"


def outcome_table(data: dict[str, Any]) -> list[str]:
    """Table 1: the setting and the paired differences of every cell, by group."""
    head = (
        "| cell (report) | task, output tokens | teacher / student (ratio) | teacher samples "
        "right | start (test score) | seeds | budget | reverse KL (cross: GOLD) - SFT | "
        "GKD (cross: next-byte) - SFT |"
    )
    lines = []
    for group, title in data["groups"].items():
        cells = [c for c in data["cells"] if c["group"] == group]
        if not cells:
            continue
        lines += ["", f"#### {title}", "", head, "|" + "---|" * 9]
        for c in cells:
            start = f"{c['start']['kind']}: {c['start']['detail']}"
            lines.append(
                f"| {_link(c)} | {c['task']}; {c['output_tokens']} | {c['teacher']} / "
                f"{c['student']} ({c['ratio']}) | {c['teacher_samples_right']} | {start} | "
                f"{c['seeds']} | {c['budget']} | {arm_cell(c, 'A')} | {arm_cell(c, 'B')} |"
            )
    return lines


def cost_table(data: dict[str, Any]) -> list[str]:
    """Table 2: FLOPs to continued SFT's best, the KL gap, the command and the wall time."""
    lines = [
        "| cell | FLOPs to continued SFT's best (arm / SFT) | KL to the teacher | command | "
        "wall time |",
        "|---|---|---|---|---|",
    ]
    for c in data["cells"]:
        lines.append(
            f"| **{c['id']}** | {c['flops_to_sft_best']} | {c['kl_gap']} | `{c['command']}` | "
            f"{c['wall']} |"
        )
    return lines


def rule_table(data: dict[str, Any]) -> list[str]:
    """Every arm where the two rules, or the report's word and the paired rule, disagree."""
    lines = [
        "| cell | arm | accounting | arm - SFT | paired rule | compare's rule | report says |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in data["cells"]:
        for arm in c["arms"]:
            p = paired_verdict(arm, c["higher_is_better"])
            q = compare_verdict(arm, c["higher_is_better"])
            said = arm.get("report_verdict", "–")
            if p in ("–", "?") or ((q in ("–", p)) and said in ("–", p)):
                continue
            m, sd, n = diff_stats(arm)
            lines.append(
                f"| {c['id']} | {ARM_NAMES[arm['name']]} | {arm['accounting']} | "
                f"{m:+.3f} ± {sd:.3f} (n {n}) | {p} | {q} | {said} |"
            )
    return lines


def _figure_rows(data: dict[str, Any], group: str) -> list[tuple[str, str, list[tuple]]]:
    """[(cell id, arm name, [(accounting, advantage mean, sd, word)])] of one group, where the
    advantage is arm - SFT (SFT - arm for a lower-is-better metric); superseded cells and
    degenerate rows left out."""
    rows = []
    for c in data["cells"]:
        if c["group"] != group or c.get("superseded"):
            continue
        sign = 1 if c["higher_is_better"] else -1
        by_arm: dict[str, list[tuple]] = {}
        for arm in c["arms"]:
            stats = diff_stats(arm)
            if stats is None or arm.get("degenerate"):
                continue
            word = paired_verdict(arm, c["higher_is_better"])
            by_arm.setdefault(arm["name"], []).append(
                (arm["accounting"], sign * stats[0], stats[1], word)
            )
        rows += [(f"{c['id']} [{c['start']['kind']}]", name, pts) for name, pts in by_arm.items()]
    return rows


def figure(data: dict[str, Any], out: Path) -> None:
    """Paired differences (mean ± seed sd of arm - SFT) per cell and arm, one panel per group,
    a zero line; filled markers: the data paid (or charged), hollow: free (just below), grey:
    equal steps; the paired rule's win / loss written at the right. For the KL group the axis is
    SFT - arm, so right of zero means on-policy better in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in data["groups"] if g != "pending"]
    rows = {g: _figure_rows(data, g) for g in groups}
    groups = [g for g in groups if rows[g]]
    heights = [len(rows[g]) + 1.5 for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 0.24 * sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    colors = {"reverse_kl": "tab:blue", "gkd": "tab:orange", "gold": "tab:green",
              "next_byte": "tab:purple"}  # fmt: skip
    score_lim = (-0.27, 0.16)
    for ax, g in zip(axes, groups, strict=True):
        ax.axvline(0.0, color="black", lw=0.8)
        for i, (_, name, pts) in enumerate(rows[g]):
            for acc, mean, sd, _ in pts:
                y = i + (0.3 if acc == "free" else 0.0)
                color = "grey" if acc == "steps" else colors[name]
                face = "none" if acc == "free" else color
                ax.errorbar(mean, y, xerr=sd, fmt="o", color=color, mfc=face, ms=4.5, capsize=2)
            said = ", ".join(f"{w} ({acc})" for acc, _, _, w in pts if w in ("win", "loss"))
            if said:
                ax.annotate(said, (1.0, i + 0.15), xycoords=("axes fraction", "data"),
                            xytext=(4, 0), textcoords="offset points", va="center", fontsize=6.5,
                            color="grey" if pts[0][0] == "steps" else colors[name])  # fmt: skip
        ax.set_yticks(range(len(rows[g])))
        ax.set_yticklabels([f"{cid}: {ARM_NAMES[n]}" for cid, n, _ in rows[g]], fontsize=7)
        ax.set_ylim(len(rows[g]) - 0.3, -0.7)
        if g == "real":
            ax.set_xlabel("SFT - arm, sampled KL/char (right of 0: on-policy closer)", fontsize=8)
        else:
            ax.set_xlim(*score_lim)
            ax.set_xlabel("arm - SFT, exact match (right of 0: on-policy better)", fontsize=8)
        ax.set_title(data["groups"][g], fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        "Issue 11 regime map: on-policy minus continued SFT, mean ± seed sd of the paired "
        "difference\nfilled: teacher data paid (or charged), hollow: free, grey: equal "
        "steps; win / loss: the paired rule (2 standard errors)\ncells without per-seed "
        "pairs, superseded cells and degenerate rows: in the tables only",
        fontsize=8.5,
    )
    fig.tight_layout(rect=(0, 0, 0.93, 0.97))
    fig.savefig(out, dpi=110)
    plt.close(fig)


MARKER = (
    "<!-- generated by examples/evidence/regime_map.py from regime-map.json; do not edit below -->"
)


def generated(data: dict[str, Any]) -> str:
    """The generated part of the report: both tables and the rules' disagreements."""
    return "\n".join(
        ["### Table 1: setting and outcome", *outcome_table(data), "",
         "### Table 2: cost, command, wall time", "", *cost_table(data), "",
         "### Rules: where the verdict rules disagree", "", *rule_table(data), ""]
    )  # fmt: skip


def update(report: Path, data: dict[str, Any]) -> None:
    """Replace everything after ``MARKER`` in ``report`` with ``generated(data)``."""
    text = report.read_text()
    if MARKER not in text:
        raise ValueError(f"{report} has no line {MARKER!r} to write the tables under")
    report.write_text(text[: text.index(MARKER) + len(MARKER)] + "\n\n" + generated(data))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--figure", type=Path, help="write the figure here (PNG)")
    ap.add_argument("--update", type=Path, help="rewrite the tables of this report (after MARKER)")
    args = ap.parse_args(argv)
    data = load(args.data)
    if args.update:
        update(args.update, data)
    else:
        print(generated(data))
    if args.figure:
        figure(data, args.figure)


if __name__ == "__main__":
    main()

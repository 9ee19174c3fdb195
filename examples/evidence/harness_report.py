"""Regime tables of a comparison run by the harness (``onpolicy compare``), from its
``report.json``: each arm against continued SFT at equal FLOPs in both accountings (paired by seed),
the FLOPs each arm needs to reach continued SFT's best score, the early drop; and, from the JSON of
``harness_diagnostics.py runs``, survival by step and reverse KL by position (table and figure).

    python examples/evidence/harness_report.py --out outputs/compare/evidence-long \
        [--diagnostics FILE.json --figure docs/results/evidence-long-diagnostics.png]

Equal FLOPs: with ``teacher_data: paid`` every run's plan spends the same paid FLOPs, so the paid
comparison is at the end of every run. With the teacher's data free, SFT's run spent less than
the others (its budget went to the teacher's samples), so the free comparison is at SFT's free
FLOPs: every arm's score at its last evaluation at or below them (1% slack).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from examples.evidence.report import _ms, verdict
from onpolicy.evidence.diagnostics import early_drop, flops_to_reach

ARMS = ("reverse_kl", "gkd")
AXES = ("flops_paid", "flops_free")


def load(out: Path, start: str) -> dict[str, dict[int, list[dict]]]:
    """``{method: {seed: curve}}`` of the runs from ``start``."""
    data = json.loads((out / "report.json").read_text())
    runs: dict[str, dict[int, list[dict]]] = {}
    for j in data["jobs"]:
        if j["start"] == start and j["status"] == "ok" and j["curve"]:
            runs.setdefault(j["method"], {})[j["seed"]] = j["curve"]
    return runs


def score_at(curve: list[dict], axis: str, flops: float) -> float:
    return [p for p in curve if p[axis] <= flops * 1.01][-1]["score"]


def regime_table(runs: dict) -> list[str]:
    lines = [
        "| accounting | FLOPs (mean) | SFT | arm | arm score | arm - SFT (paired, ± sd) "
        "| verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    sft = runs["sft"]
    for axis in AXES:
        budget = {s: c[-1][axis] for s, c in sft.items()}  # SFT's end (paid: everyone's)
        base = {s: score_at(c, axis, budget[s]) for s, c in sft.items()}
        for arm in ARMS:
            got = {s: score_at(c, axis, budget[s]) for s, c in runs.get(arm, {}).items()}
            diffs = [got[s] - base[s] for s in sorted(got) if s in base]
            lines.append(
                f"| {axis[6:]} | {statistics.mean(budget.values()):.2e} | "
                f"{_ms(list(base.values()))} | {arm} | {_ms(list(got.values()))} | "
                f"{_ms(diffs)} | {verdict(diffs)} |"
            )
    return lines


def reach_table(runs: dict) -> list[str]:
    """Per seed: FLOPs for the arm to first reach SFT's best score / SFT's FLOPs to reach it."""
    lines = ["| accounting | SFT best (step) | arm | arm FLOPs / SFT FLOPs to it, per seed |"]
    lines.append("|---|---|---|---|")
    for axis in AXES:
        bests, notes = [], []
        for arm in ARMS:
            ratios = []
            for seed, sc in sorted(runs["sft"].items()):
                best = max(p["score"] for p in sc)
                at = flops_to_reach([p[axis] for p in sc], [p["score"] for p in sc], best)
                curve = runs.get(arm, {}).get(seed)
                if curve is None:
                    continue
                mine = flops_to_reach([p[axis] for p in curve], [p["score"] for p in curve], best)
                if arm == ARMS[0]:
                    bests.append(best)
                    notes.append(str(next(p["step"] for p in sc if p["score"] >= best)))
                if not at:
                    ratios.append("SFT's best is its start")
                else:
                    ratios.append("never" if mine is None else f"{mine / at:.2f}")
            lines.append(
                f"| {axis[6:]} | {_ms(bests)} ({', '.join(notes)}) | {arm} | {', '.join(ratios)} |"
            )
    return lines


def drop_table(runs: dict) -> list[str]:
    lines = ["| method | score at start | early drop (first 2 evaluations) | best | end |"]
    lines.append("|---|---|---|---|---|")
    for m in ("sft", *ARMS):
        curves = list(runs.get(m, {}).values())
        if not curves:
            continue
        sc = [[p["score"] for p in c] for c in curves]
        lines.append(
            f"| {m} | {_ms([s[0] for s in sc])} | {_ms([early_drop(s, 2) for s in sc])} | "
            f"{_ms([max(s) for s in sc])} | {_ms([s[-1] for s in sc])} |"
        )
    return lines


def diagnostics_tables(diag: dict) -> list[str]:
    """Survival by step and KL thirds: the start weights, then each method at its end."""
    groups: dict[str, list[dict]] = {"start": list(diag["start"].values())}
    for key, v in diag["runs"].items():
        groups.setdefault(key.split("/")[0], []).append(v)
    groups.pop("untouched", None)
    k = len(groups["start"][0]["survival"])
    lines = [
        "| right through step | " + " | ".join(groups) + " |",
        "|---" * (len(groups) + 1) + "|",
    ]
    for i in range(k):
        cells = [_ms([v["survival"][i] for v in vs]) for vs in groups.values()]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    lines += ["", "| model | KL/token first / middle / last third | greedy test exact match |"]
    lines.append("|---|---|---|")
    for name, vs in groups.items():
        thirds = " / ".join(
            f"{statistics.mean(v['kl_thirds'][t] for v in vs):.3f}" for t in range(3)
        )
        lines.append(f"| {name} | {thirds} | {_ms([v['score'] for v in vs])} |")
    return lines


def plot_diagnostics(diag: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict]] = {"start": list(diag["start"].values())}
    for key, v in diag["runs"].items():
        if not key.startswith("untouched"):
            groups.setdefault(key.split("/")[0], []).append(v)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, vs in groups.items():
        k = len(vs[0]["survival"])
        a.plot(range(1, k + 1), [statistics.mean(v["survival"][i] for v in vs) for i in range(k)],
               marker="o", label=name)  # fmt: skip
        kl = [
            statistics.mean(v["kl_by_position"][j] for v in vs)
            for j in range(len(vs[0]["kl_by_position"]))
        ]
        b.plot(range(len(kl)), kl, label=name)
    a.set(xlabel="scratchpad step k", ylabel="share right through step k (greedy, test)")
    b.set(xlabel="completion position", ylabel="KL(student || teacher) per token, own samples")
    a.legend(), b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_warm(metrics: list[Path], branch: int, path: Path) -> list[str]:
    """The warm-up's validation exact match by step, one line per ``metrics.jsonl`` (a trainer
    run folder's log), the branch step marked; returns the curve as Markdown table rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    rows = {}
    for i, m in enumerate(metrics):
        recs = [json.loads(x) for x in m.read_text().splitlines()]
        pts = [(r["step"], r["eval/score"]) for r in recs if "eval/score" in r]
        ax.plot(*zip(*pts, strict=True), "-o", ms=3, c=f"C{i}", label=f"warm-up seed {i}")
        rows[i] = dict(pts)
    ax.axvline(branch, ls="--", c="gray", lw=1, label=f"plateau rule met (step {branch})")
    ax.set(xlabel="SFT warm-up step (batch 32, lr 2e-3)", ylabel="validation exact match")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    steps = sorted({k for r in rows.values() for k in r})
    out = ["| step | " + " | ".join(str(k) for k in steps) + " |"]
    out.append("|---" * (len(steps) + 1) + "|")
    for i, r in rows.items():
        out.append(
            f"| seed {i} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in steps) + " |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--start", default="plateau")
    ap.add_argument("--diagnostics", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--warm", type=Path, nargs="*", help="warm-up metrics.jsonl files")
    ap.add_argument("--branch", type=int, default=0, help="the warm-up step branched from")
    ap.add_argument("--warm-figure", type=Path)
    args = ap.parse_args()
    runs = load(args.out, args.start)
    doc = []
    if args.warm:
        doc += ["### Warm-up curve", "", *plot_warm(args.warm, args.branch, args.warm_figure), ""]
    doc += ["### Arm - continued SFT at equal FLOPs", "", *regime_table(runs), ""]
    doc += ["### FLOPs to reach continued SFT's best score", "", *reach_table(runs), ""]
    doc += ["### Start, early drop, best and end (test exact match)", "", *drop_table(runs), ""]
    if args.diagnostics:
        diag = json.loads(args.diagnostics.read_text())
        doc += ["### Diagnostics", "", *diagnostics_tables(diag), ""]
        if args.figure:
            plot_diagnostics(diag, args.figure)
    print("\n".join(doc))


if __name__ == "__main__":
    main()

"""Tables and figures of the regime experiment, from the JSON that ``experiment.py`` wrote.

    python examples/evidence/report.py --out outputs/evidence/long --name long

Prints markdown tables (regime map, FLOPs to reach SFT's best, share of outputs right through
step k, early drop, reverse KL by position, wall times) and writes ``evidence-<name>-curves.png``
and ``evidence-<name>-diagnostics.png`` under ``--docs``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from onpolicy.evidence.diagnostics import early_drop, flops_to_reach

ON_POLICY = ("reverse_kl", "gkd", "rkl_h16", "rkl_h32")
STARTS = ("plateau", "early", "cold")


def load_runs(out: Path) -> dict[tuple[str, str], list[dict]]:
    """``{(start, arm): [run per seed, by seed]}`` from ``out/main``."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for path in sorted((out / "main").glob("*.json")):
        r = json.loads(path.read_text())
        runs.setdefault((r["start"], r["arm"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in runs.items()}


def at_budget(run: dict, axis: str, budget: float) -> float:
    """The score at the last evaluation with ``axis`` FLOPs <= ``budget`` (1% slack)."""
    pts = [p for p in run["curve"] if p[axis] <= budget * 1.01]
    return pts[-1]["score"]


def budget_of(runs: dict, start: str) -> float:
    """The shared budget: reverse KL's final FLOPs (free = paid for on-policy runs)."""
    return statistics.mean(r["curve"][-1]["flops_free"] for r in runs[(start, "reverse_kl")])


def _ms(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.3f}" if xs else "–"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def paired_rule(mean: float, sd: float, n: int) -> str:
    """``win`` / ``loss`` when the paired mean difference (arm - SFT, higher is better) is beyond
    2 standard errors (``sd / sqrt(n)``, ``sd`` the sample sd over seeds), else ``tie``; ``?``
    under 2 seeds."""
    if n < 2:
        return "?"
    se = sd / n**0.5
    return "win" if mean > 2 * se and mean > 0 else "loss" if mean < -2 * se and mean < 0 else "tie"


def verdict(diffs: list[float]) -> str:
    """win / lose when the paired mean difference is beyond 2 standard errors, else tie."""
    if len(diffs) < 2:
        return "?"
    word = paired_rule(statistics.mean(diffs), statistics.stdev(diffs), len(diffs))
    return {"win": "**wins**", "loss": "loses", "tie": "ties"}[word]


def regime_table(runs: dict) -> list[str]:
    lines = [
        "| start | accounting | SFT | arm | arm score | arm - SFT (paired, ± sd) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for start in STARTS:
        if (start, "sft") not in runs or (start, "reverse_kl") not in runs:
            continue
        b = budget_of(runs, start)
        for axis in ("flops_free", "flops_paid"):
            sft = {r["seed"]: at_budget(r, axis, b) for r in runs[(start, "sft")]}
            for arm in ON_POLICY:
                if (start, arm) not in runs:
                    continue
                got = {r["seed"]: at_budget(r, axis, b) for r in runs[(start, arm)]}
                diffs = [got[s] - sft[s] for s in got if s in sft]
                lines.append(
                    f"| {start} | {axis[6:]} | {_ms(list(sft.values()))} | {arm} | "
                    f"{_ms(list(got.values()))} | {_ms(diffs)} | {verdict(diffs)} |"
                )
    return lines


def reach_table(runs: dict) -> list[str]:
    """FLOPs each arm needs to reach SFT's best score within the budget, over SFT's own."""
    lines = ["| start | accounting | SFT best | arm | arm FLOPs / SFT FLOPs to it (per seed) |"]
    lines.append("|---|---|---|---|---|")
    for start in STARTS:
        if (start, "sft") not in runs:
            continue
        b = budget_of(runs, start)
        for axis in ("flops_free", "flops_paid"):
            for arm in ON_POLICY:
                ratios, bests = [], []
                for sft, run in zip(runs[(start, "sft")], runs.get((start, arm), []), strict=False):
                    pts = [p for p in sft["curve"] if p[axis] <= b * 1.01]
                    best = max(p["score"] for p in pts)
                    at = flops_to_reach([p[axis] for p in pts], [p["score"] for p in pts], best)
                    mine = flops_to_reach(
                        [p[axis] for p in run["curve"]], [p["score"] for p in run["curve"]], best
                    )
                    bests.append(best)
                    ratios.append("never" if mine is None else f"{mine / max(at, 1.0):.2f}")
                if ratios:
                    lines.append(
                        f"| {start} | {axis[6:]} | {_ms(bests)} | {arm} | {', '.join(ratios)} |"
                    )
    return lines


def survival_table(runs: dict, start: str) -> list[str]:
    """Share of greedy test outputs right through step k, at the end of each arm (free budget)."""
    arms = [a for a in ("sft", *ON_POLICY) if (start, a) in runs]
    if not arms:
        return []
    k_max = len(runs[(start, arms[0])][0]["curve"][-1]["survival"])
    lines = ["| right through step | start | " + " | ".join(arms) + " |"]
    lines.append("|---" * (len(arms) + 2) + "|")
    for k in range(k_max):
        first = statistics.mean(r["curve"][0]["survival"][k] for r in runs[(start, arms[0])])
        cells = [_ms([r["curve"][-1]["survival"][k] for r in runs[(start, a)]]) for a in arms]
        lines.append(f"| {k + 1} | {first:.3f} | " + " | ".join(cells) + " |")
    return lines


def drop_table(runs: dict) -> list[str]:
    lines = ["| start | arm | score at start | early drop (first 3 evals, mean over seeds) |"]
    lines.append("|---|---|---|---|")
    for start in STARTS:
        for arm in ("sft", *ON_POLICY):
            rs = runs.get((start, arm), [])
            if rs:
                drops = [early_drop([p["score"] for p in r["curve"]], 3) for r in rs]
                s0 = statistics.mean(r["curve"][0]["score"] for r in rs)
                lines.append(f"| {start} | {arm} | {s0:.3f} | {_ms(drops)} |")
    return lines


def kl_table(runs: dict, start: str) -> list[str]:
    """Mean teacher-scored KL per token on the student's own samples, in thirds of the output."""
    lines = ["| arm | KL/token at start: first / middle / last third | at end |", "|---|---|---|"]

    def thirds(kl: list[float]) -> str:
        kl = [x for x in kl if x == x]  # positions no sample reached are NaN
        n = max(len(kl) // 3, 1)
        parts = (kl[:n], kl[n : 2 * n], kl[2 * n :])
        return " / ".join(f"{statistics.mean(p):.3f}" if p else "–" for p in parts)

    for arm in ("sft", *ON_POLICY):
        rs = [r for r in runs.get((start, arm), []) if r["kl_start"]]
        if rs:
            lines.append(f"| {arm} | {thirds(rs[0]['kl_start'])} | {thirds(rs[0]['kl_end'])} |")
    return lines


def wall_table(runs: dict) -> list[str]:
    lines = ["| start | arm | steps | wall s per run (mean over seeds) |", "|---|---|---|---|"]
    for (start, arm), rs in sorted(runs.items()):
        steps = statistics.mean(r["steps"] for r in rs)
        lines.append(
            f"| {start} | {arm} | {steps:.0f} | {statistics.mean(r['wall_s'] for r in rs):.0f} |"
        )
    return lines


def plot_curves(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [s for s in STARTS if (s, "sft") in runs]
    fig, axes = plt.subplots(2, len(starts), figsize=(5 * len(starts), 7), squeeze=False)
    for col, start in enumerate(starts):
        b = budget_of(runs, start)
        for row, axis in enumerate(("flops_free", "flops_paid")):
            ax = axes[row][col]
            for arm in ("sft", *ON_POLICY):
                for k, r in enumerate(runs.get((start, arm), [])):
                    pts = [p for p in r["curve"] if p[axis] <= b * 1.01]
                    ax.plot(
                        [p[axis] for p in pts],
                        [p["score"] for p in pts],
                        color=f"C{('sft', *ON_POLICY).index(arm)}",
                        alpha=0.8,
                        lw=1.2,
                        label=arm if k == 0 else None,
                    )
            ax.set_title(f"start: {start}; teacher data {axis[6:]}")
            ax.set_xlabel("cumulative training FLOPs")
            ax.set_ylabel("held-out exact match")
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_diagnostics(runs: dict, start: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    arms = [a for a in ("sft", *ON_POLICY) if (start, a) in runs]
    for k, arm in enumerate(arms):
        rs = runs[(start, arm)]
        k_steps = len(rs[0]["curve"][-1]["survival"])  # share right through step 1..k
        means = [statistics.mean(r["curve"][-1]["survival"][j] for r in rs) for j in range(k_steps)]
        a1.plot(range(1, k_steps + 1), means, marker="o", color=f"C{k}", label=arm)
        diag = [r for r in rs if r["kl_end"]]
        if diag:
            if k == 0:
                a2.plot(diag[0]["kl_start"], color="k", ls="--", label="start (all arms)")
            a2.plot(diag[0]["kl_end"], color=f"C{k}", label=f"{arm}, end")
    a1.set(xlabel="scratchpad step k", ylabel="share right through step k", title="survival")
    a2.set(
        xlabel="completion position",
        ylabel="KL(student || teacher), own samples",
        title=f"teacher-scored reverse KL by position (start: {start}, seed 0)",
    )
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("outputs/evidence/long"))
    p.add_argument("--docs", type=Path, default=Path("docs/results"))
    p.add_argument("--name", default="long", help="figure names: evidence-<name>-*.png")
    a = p.parse_args(argv)
    runs = load_runs(a.out)
    sections = {
        "Regime map (score at equal FLOPs)": regime_table(runs),
        "FLOPs to reach continued SFT's best score": reach_table(runs),
        "Right through step k (plateau start, end of run)": survival_table(runs, "plateau"),
        "Early drop": drop_table(runs),
        "Reverse KL by position (plateau start)": kl_table(runs, "plateau"),
        "Wall time": wall_table(runs),
    }
    for title, lines in sections.items():
        print(f"\n### {title}\n")
        print("\n".join(lines))
    plot_curves(runs, a.docs / f"evidence-{a.name}-curves.png")
    if any(k[0] == "plateau" for k in runs):
        plot_diagnostics(runs, "plateau", a.docs / f"evidence-{a.name}-diagnostics.png")


if __name__ == "__main__":
    main()

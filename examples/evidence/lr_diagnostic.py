"""The real pair's learning-rate diagnostic (issue 11 items 4 + 7), from one or more compare
``report.json`` files: every learning-rate trial's validation end point, and every trained run's
held-out end point and best point (its lowest greedy KL/byte) with the collapse diagnostics next
to each KL.

    python examples/evidence/lr_diagnostic.py outputs/real-pair-lr/run/report.json [more ...] \
        [--plot docs/results/real-pair-lr-curves.png]

Trial columns (the trainer's last evaluation on the validation split; the harness's
``lr_search`` chooses by the KL/token column, lower wins): KL/token, KL/byte, teacher NLL/byte,
repetition (share of a completion's token trigrams seen earlier in it, mean over completions) and
the share cut at the length limit. Run columns: the harness's sampled KL/char at the end, then at
the end and at the curve's best (greedy held-out completions): KL/byte, teacher NLL/byte,
repetition, cut share and (``eval.forward_nll``) the student's NLL/byte of held-out teacher
samples. An untrained row (``untouched``) has no curve: it gets the step-0 evaluation of a trained
run of its seed (the same weights). ``--plot``: every trained run's curves in one figure (the
harness's own figure code), one line per method and learning rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

_TRIAL = ("kl_per_token", "kl_per_byte", "teacher_nll_per_byte", "repetition_rate",
          "truncated_share")  # fmt: skip
_POINT = ("kl_per_byte", "teacher_nll_per_byte", "repetition", "cut_share", "forward_nll_per_byte")


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def trial_table(trials: list[dict[str, Any]]) -> list[str]:
    """One row per trial, by method then rate."""
    out = ["| method | lr | KL/token | KL/byte | teacher NLL/byte | repetition | cut at limit |",
           "|" + "---|" * 7]  # fmt: skip
    for t in sorted(trials, key=lambda t: (t["method"], t["lr"])):
        m = t["metrics"]
        cells = " | ".join(_f(m.get(f"eval/{k}")) for k in _TRIAL)
        out.append(f"| {t['method']} | {t['lr']:.0e} | {cells} |")
    return out


def best_point(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluation with the lowest KL/byte (the earliest on a tie)."""
    return min(curve, key=lambda p: (p["kl_per_byte"], p["step"]))


def run_table(jobs: list[dict[str, Any]]) -> list[str]:
    """One row per trained or untouched run: the end, then the best point of its curve."""
    head = "KL/byte | teacher NLL/byte | repetition | cut | fwd NLL/byte"
    out = [f"| method | seed | lr | steps | KL/char sampled | end: {head} | best step | "
           f"best: {head} |", "|" + "---|" * 16]  # fmt: skip
    ok = [j for j in jobs if j["status"] == "ok"]
    for j in ok:
        curve = j["curve"] or next(
            (t["curve"][:1] for t in ok if t["seed"] == j["seed"] and t["curve"]), []
        )
        if not curve:
            continue
        end, best = curve[-1], best_point(curve)
        lr = "–" if j.get("lr") is None or not j["curve"] else f"{j['lr']:.0e}"
        out.append(
            f"| {j['method']} | {j['seed']} | {lr} | {j['steps']} | {_f(j['kl_per_char'])} | "
            + " | ".join(_f(end.get(k)) for k in _POINT)
            + f" | {best['step']} | "
            + " | ".join(_f(best.get(k)) for k in _POINT)
            + " |"
        )
    return out


def groups(jobs: list[dict[str, Any]]) -> dict[str, dict[str, list[list[Any]]]]:
    """The harness figure's groups: one start point per seed, one line per (method, lr)."""
    from onpolicy.compare.curves import CurvePoint

    out: dict[str, dict[str, list[list[Any]]]] = {}
    for j in jobs:
        if j["status"] == "ok" and j["curve"]:
            line = f"{j['method']} lr {j['lr']:.0e}"
            curve = [CurvePoint(**p) for p in j["curve"]]
            out.setdefault(f"seed {j['seed']}", {}).setdefault(line, []).append(curve)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", type=Path, nargs="+", help="compare output_dirs' report.json")
    p.add_argument("--plot", type=Path, help="write every run's curves to this PNG")
    args = p.parse_args(argv)
    trials, jobs = [], []
    for path in args.reports:
        report = json.loads(path.read_text())
        trials += report.get("lr_trials") or []
        jobs += report["jobs"]
    lines = ([*trial_table(trials), ""] if trials else []) + run_table(jobs)
    print("\n".join(lines))
    if args.plot:
        from onpolicy.compare.curve_plot import plot_curves

        plot_curves(groups(jobs), args.plot, None, "paid", metric="none")


if __name__ == "__main__":
    main()

"""The real-pair comparison's end points over seeds (issue 11 item 7), from the harness's
``report.json``: per method, mean ± sd over seeds of the sampled KL/char to the teacher, and on the
greedy held-out completions at the end the teacher NLL/byte, KL/byte, repetition rate and share
cut at the length limit; each arm against continued SFT paired by seed; and whether each arm's
run was still moving at its end (training loss and held-out KL/byte over its last ~10 steps).

    python examples/evidence/real_pair_table.py outputs/real-pair/run3/report.json

An untrained row (``untouched``) has no curve: its greedy end point is the step-0 evaluation of a
trained run of its seed (the same warm weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from examples.evidence.report import _ms, verdict


def end_point(job: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The greedy held-out evaluation at the end of ``job`` (step 0 of a twin when untrained)."""
    if job["curve"]:
        return job["curve"][-1]
    twin = next(j for j in jobs if j["seed"] == job["seed"] and j["curve"])
    return twin["curve"][0]


def moving(job: dict[str, Any]) -> tuple[float | None, float | None]:
    """(mean training loss over the last 5 steps minus the 5 before, held-out KL/byte at the end
    minus at the last evaluation at least 10 steps earlier); None for a run too short or without a
    curve."""
    losses, curve = job.get("losses") or [], job["curve"]
    loss = None
    if len(losses) >= 10:
        loss = statistics.fmean(losses[-5:]) - statistics.fmean(losses[-10:-5])
    earlier = [p for p in curve if p["step"] <= curve[-1]["step"] - 10]
    kl = curve[-1]["kl_per_byte"] - earlier[-1]["kl_per_byte"] if earlier else None
    return loss, kl


def tables(report: dict[str, Any]) -> list[str]:
    jobs = [j for j in report["jobs"] if j["status"] == "ok"]
    methods = list(dict.fromkeys(j["method"] for j in jobs))
    by = {
        m: sorted((j for j in jobs if j["method"] == m), key=lambda j: j["seed"]) for m in methods
    }
    out = [
        "| method | seeds | KL/char, sampled | teacher NLL/byte, greedy end | KL/byte, greedy end "
        "| repetition, end | cut at limit, end | lr | steps |",
        "|" + "---|" * 9,
    ]
    for m, runs in by.items():
        ends = [end_point(j, jobs) for j in runs]
        lr = runs[0]["lr"]
        out.append(
            f"| {m} | {', '.join(str(j['seed']) for j in runs)} | "
            f"{_ms([j['kl_per_char'] for j in runs])} | "
            f"{_ms([e['teacher_nll_per_byte'] for e in ends])} | "
            f"{_ms([e['kl_per_byte'] for e in ends])} | {_ms([j['repetition'] for j in runs])} | "
            f"{_ms([j['cut_share'] for j in runs])} | {'–' if lr is None else f'{lr:.0e}'} | "
            f"{' / '.join(dict.fromkeys(str(j['steps']) for j in runs))} |"
        )
    sft = {j["seed"]: j["kl_per_char"] for j in by.get("sft", [])}
    out += ["", "| arm | arm - SFT KL/char, paired by seed (± sd) | per seed | verdict |",
            "|---|---|---|---|"]  # fmt: skip
    for m, runs in by.items():
        if m == "sft":
            continue
        diffs = [j["kl_per_char"] - sft[j["seed"]] for j in runs if j["seed"] in sft]
        per = ", ".join(f"{d:+.3f}" for d in diffs)
        # lower KL is better: the arm wins when SFT's KL minus the arm's is clearly positive
        out.append(f"| {m} | {_ms(diffs)} | {per} | {verdict([-d for d in diffs])} |")
    out += ["", "| method | training loss, last 5 steps - the 5 before (± sd) | held-out KL/byte, "
            "end - >= 10 steps earlier (± sd) |", "|---|---|---|"]  # fmt: skip
    for m, runs in by.items():
        loss, kl = zip(*(moving(j) for j in runs), strict=True)
        out.append(
            f"| {m} | {_ms([x for x in loss if x is not None])} | "
            f"{_ms([x for x in kl if x is not None])} |"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="a compare output_dir's report.json")
    print("\n".join(tables(json.loads(p.parse_args(argv).report.read_text()))))


if __name__ == "__main__":
    main()

"""Per-seed paired differences against continued SFT from a compare run's ``report.json``.

    python examples/evidence/paired_report.py outputs/compare/evidence-long-gpu/report.json

For each arm: (arm - sft) per seed of the final exact match and of the KL(student || teacher) per
char, their mean and sample sd over seeds; and per seed the paid FLOPs at which each arm's curve
first reaches SFT's final score (None: never). Runs must share their seeds.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(path: str) -> None:
    report = json.loads(Path(path).read_text())
    jobs = {(j["method"], j["seed"]): j for j in report["jobs"] if j.get("status") == "ok"}
    seeds = sorted({s for _, s in jobs})
    arms = sorted({m for m, _ in jobs} - {"sft"})
    for key in ("score", "kl_per_char"):
        for arm in arms:
            diff = [jobs[(arm, s)][key] - jobs[("sft", s)][key] for s in seeds]
            sd = statistics.stdev(diff) if len(diff) > 1 else 0.0
            print(f"{key} {arm} - sft per seed {[round(d, 4) for d in diff]} "
                  f"mean {statistics.mean(diff):+.4f} sd {sd:.4f}")  # fmt: skip
    for s in seeds:
        target, hits = jobs[("sft", s)]["score"], []
        for arm in ["sft", *arms]:
            curve = [p for p in jobs[(arm, s)].get("curve", []) if p.get("score") is not None]
            first = next((p["flops_paid"] for p in curve if p["score"] >= target), None)
            hits.append(f"{arm} {first:.2e}" if first else f"{arm} never")
        print(f"seed {s}: sft final {target}; paid FLOPs to reach it: {', '.join(hits)}")


if __name__ == "__main__":
    main(sys.argv[1])

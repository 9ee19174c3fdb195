"""The share of the same-tokenizer on-policy gain that cross-tokenizer on-policy recovers
(issue 11, item 8; docs/results/warm-start-cross.md), from two compare reports.

    python benchmarks/warm_start_share.py outputs/compare/warm-start-cross/report.json \\
        outputs/compare/warm-start-cross-ref/report.json

Gains are paired by seed: a method's held-out score minus the same seed's untouched score at the
same start (cold / step<k> / plateau). Share = cross gain / same-tokenizer gain (of the means);
undefined when the same-tokenizer gain is not positive.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

CROSS = ("gold", "next_byte_cross", "sft_cross")
SAME = ("reverse_kl", "sft")


def gains(report: dict, base: str, methods: tuple[str, ...]) -> dict[tuple[str, str], dict]:
    """``{(start, method): {seed: score - untouched score}}``."""
    score = {(j["start"], j["method"], j["seed"]): j["score"] for j in report["jobs"]}
    out: dict[tuple[str, str], dict] = {}
    for (start, method, seed), value in score.items():
        if method in methods:
            out.setdefault((start, method), {})[seed] = value - score[(start, base, seed)]
    return out


def mean_sd(per_seed: dict) -> tuple[float, float]:
    values = [per_seed[k] for k in sorted(per_seed)]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(cross_path: str, same_path: str) -> None:
    cross = gains(json.loads(Path(cross_path).read_text()), "untouched_cross", CROSS)
    same = gains(json.loads(Path(same_path).read_text()), "untouched", SAME)
    for start in ("cold", "step100", "plateau"):
        if (start, "reverse_kl") not in same:
            continue
        ref, ref_sd = mean_sd(same[(start, "reverse_kl")])
        print(f"{start}: same-tokenizer reverse_kl gain {ref:+.3f} ± {ref_sd:.3f}")
        for method in CROSS:
            if (start, method) not in cross:
                continue
            gain, sd = mean_sd(cross[(start, method)])
            share = f"{gain / ref:+.2f}" if ref > 0 else "undefined"
            print(f"  {method}: gain {gain:+.3f} ± {sd:.3f}, share {share}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""The trainer's held-out evaluations of a comparison's runs, with the diagnostics the curves leave
out: repetition rate, share of completions cut at max_new_tokens, completion length and the
student's entropy next to KL(student || teacher) per byte and the teacher's NLL per byte.

    python examples/evidence/eval_diagnostics.py outputs/real-pair/run outputs/real-pair/run-gkd0

Reads ``<dir>/runs/**/metrics.jsonl`` (the trainer's ``eval/*`` records, on the student's greedy
completions of the held-out prompts). A falling KL/byte with a rising repetition rate and every
completion cut at the limit is a student that found loops the teacher also predicts, not a
better student.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = [
    ("KL/byte", "eval/kl_per_byte", ".3f"),
    ("teacher NLL/byte", "eval/teacher_nll_per_byte", ".3f"),
    ("repetition", "eval/repetition_rate", ".3f"),
    ("cut at limit", "eval/truncated_share", ".2f"),
    ("length", "eval/completion_length", ".1f"),
    ("student entropy", "eval/student_entropy", ".2f"),
]


def rows(metrics: Path) -> list[dict]:
    """The evaluation records of one run, in step order."""
    out = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r for r in out if "eval/kl_per_byte" in r]


def table(run_dirs: list[Path]) -> str:
    head = "| run | step | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for d in run_dirs:
        for metrics in sorted(d.glob("runs/**/metrics.jsonl")):
            name = str(metrics.parent.relative_to(d / "runs"))
            for r in rows(metrics):
                cells = " | ".join(format(r.get(k, float("nan")), f) for _, k, f in COLUMNS)
                lines.append(f"| {name} | {r['step']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path, help="compare output_dir folders")
    print(table(p.parse_args(argv).dirs))


if __name__ == "__main__":
    main()

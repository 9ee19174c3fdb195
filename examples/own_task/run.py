"""The whole "bring your own task and models" guide in one go (README section of that name):

    python examples/own_task/run.py             # minutes on a CPU
    python examples/own_task/run.py --quick     # a few steps each: checks the plumbing (the tests)

1. ``onpolicy train --config examples/own_task/teacher.yaml``  (gold SFT: the teacher)
2. ``onpolicy train --config examples/own_task/student.yaml``  (gold SFT: warm the student)
3. ``onpolicy compare --config examples/own_task/compare.yaml`` (which method helps the student)

Each step is the command line a user types; the data is ``data/{train,eval}.jsonl``
(``make_data.py`` writes it). Outputs go to ``runs/own_task`` (``--out`` to change); a rerun
starts over (``--fresh``: an earlier run's folder is kept, renamed ``<folder>.old-<time>``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = {
    "teacher": ["train.steps=3", "eval.every=0", "eval.num_prompts=4"],
    "student": ["train.steps=2", "eval.every=0", "eval.num_prompts=4"],
    "compare": [
        "train.steps=2",
        "train.batch_size=4",
        "methods=[untouched, {name: gold_sft, objective: sft, params: {source: dataset}}]",
    ],
}


def onpolicy(*args: str) -> None:
    cmd = [sys.executable, "-m", "onpolicy.cli", *args]
    print("$ onpolicy " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> Path:
    """Run the three steps; returns the comparison's output folder."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/own_task", help="folder for the three steps' outputs")
    p.add_argument("--quick", action="store_true", help="a few steps each (plumbing check)")
    args = p.parse_args(argv)
    out = Path(args.out)
    for name in ("teacher", "student"):
        extra = QUICK[name] if args.quick else []
        onpolicy("train", "--config", str(HERE / f"{name}.yaml"), "--no-progress", "--fresh",
                 f"train.output_dir={out / name}", *extra)  # fmt: skip
    models = [f"models.teacher={out / 'teacher/final'}", f"models.student={out / 'student/final'}"]
    extra = QUICK["compare"] if args.quick else []
    onpolicy("compare", "--config", str(HERE / "compare.yaml"), f"output_dir={out / 'compare'}",
             *models, *extra)  # fmt: skip
    return out / "compare"


if __name__ == "__main__":
    main()

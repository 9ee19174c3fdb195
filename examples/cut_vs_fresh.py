"""A student cut from the teacher vs the same architecture freshly initialized, at equal compute.

Teacher: the 3-layer tiny ``small`` model; student: its layers 0 and 2 (``init_student``) or the
same 2-layer config with random weights. Both train the same steps on the same batches (so the
same FLOPs) with word-level KD (forward KL) on the tiny chat data's gold completions; the held-out
NLL per completion token is printed at each step count.

    python examples/cut_vs_fresh.py [--steps 10,30,100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM

from onpolicy.init_student import init_student
from onpolicy.models import load_model, load_tokenizer, resolve_model_path
from onpolicy.scaling.grid import GridConfig, gold_rollout, mean_nll, train_student
from onpolicy.teacher.local import LocalTeacher

REPO = Path(__file__).resolve().parents[1]
TEACHER = "tiny:small,seed=1,pretrain_steps=300"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,30,100")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    data = str(REPO / "configs" / "data" / "tiny_chat.jsonl")
    cfg = GridConfig(teachers=[TEACHER], student_hidden=[128], steps=steps, data=data, lr=args.lr)
    teacher_dir = resolve_model_path(TEACHER)
    tok = load_tokenizer(teacher_dir)
    from onpolicy.data import read_rows

    rows = [row for _, row in read_rows(data)]
    train_rows, eval_ro = rows[: -cfg.eval_rows], gold_rollout(rows[-cfg.eval_rows :], tok)
    teacher_model = load_model(teacher_dir, trainable=False)
    teacher = LocalTeacher(teacher_model, tok, tok, mode="same")
    with tempfile.TemporaryDirectory() as tmp:
        init_student(teacher_dir, Path(tmp) / "cut", layers=[0, 2])
        cut = load_model(Path(tmp) / "cut")
    fresh = AutoModelForCausalLM.from_config(cut.config)  # same architecture, random weights
    print(f"teacher held-out NLL/token: {mean_nll(teacher_model, eval_ro):.4f}")
    print("| student | step 0 | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---|---|" + "---|" * len(steps))
    for name, model in (("cut from teacher (layers 0,2)", cut), ("fresh init", fresh)):
        start = mean_nll(model, eval_ro)
        curve = train_student(model, teacher, train_rows, eval_ro, tok, cfg)
        print(f"| {name} | {start:.4f} | " + " | ".join(f"{c[2]:.4f}" for c in curve) + " |")

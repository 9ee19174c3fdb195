"""Train a cached ``long_arithmetic`` teacher further (a second cosine cycle) and save it.

    python examples/evidence/continue_teacher.py --teacher large --teacher-steps 500 \
        --steps 500 --lr 1e-3 --out outputs/ratio-teacher

Used when a teacher's first cycle left it weak (the 1.77M teacher: 0.240 valid exact match after
500 steps at 3e-3) and a full rebuild does not fit the CPU left: the saved folder is a plain
model folder (``models: {kind: paths, teacher: DIR}``), its ``build.json`` says how it was made.
``--save-every K`` also saves the model every K steps of the same schedule as ``<out>/step-<n>``
(to pick a teacher of a given quality along one run: ``ratio_report.py teacher --teacher-dir``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from onpolicy.models import load_model
from onpolicy.tasks.arith_models import char_tokenizer
from onpolicy.tasks.long_arithmetic import long_arithmetic_task
from onpolicy.tasks.long_models import (
    LongModelsConfig,
    _save,
    long_models,
    max_new_tokens,
    teacher_spec,
)
from onpolicy.tasks.supervised import evaluate_exact_match, train_supervised


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="large")
    p.add_argument("--teacher-steps", type=int, default=500)
    p.add_argument("--digits", type=int, default=3)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=Path("outputs/ratio-teacher"))
    p.add_argument("--start", type=Path, default=None, help="continue this folder instead")
    p.add_argument("--seed", type=int, default=1, help="the training prompts' order")
    p.add_argument("--save-every", type=int, default=0, help="also save every K steps (0: no)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = LongModelsConfig(
        digits=a.digits, teacher=teacher_spec(a.teacher), teacher_steps=a.teacher_steps
    )
    # --start: continue that folder (it may have been trained on another digit count: a
    # curriculum); else the cached build of --teacher / --teacher-steps at --digits
    start_dir = a.start or long_models(cfg).teacher_dir
    model = load_model(start_dir, trainable=True)
    task = long_arithmetic_task(
        digits=cfg.digits, variants=cfg.variants, num_train=cfg.num_train, seed=cfg.data_seed,
        eval_split="valid", min_digits=cfg.min_digits,
    )  # fmt: skip
    tok = char_tokenizer()
    start = time.perf_counter()

    def checkpoint(step: int) -> None:
        if a.save_every and step % a.save_every == 0 and step < a.steps:
            _save(model, a.out / f"step-{step}", {
                "seconds": time.perf_counter() - start, "from": str(start_dir),
                "recipe": f"{start_dir} + {step} of {a.steps} steps at {a.lr} "
                f"(cosine, seed {a.seed})",
            })  # fmt: skip

    losses = train_supervised(
        model, tok, task.train_prompts, a.steps, cfg.batch_size, a.lr, a.seed, on_step=checkpoint
    )
    score = evaluate_exact_match(model, tok, task, max_new_tokens(cfg.digits))
    seconds = time.perf_counter() - start
    print(f"continued {a.steps} steps at {a.lr} in {seconds:.0f}s: valid exact match {score:.3f}")
    _save(model, a.out, {
        "valid_exact_match": score, "seconds": seconds, "losses": losses[::50],
        "from": str(start_dir),
        "recipe": f"{start_dir} + {a.steps} steps at {a.lr} on {a.digits} digits (seed {a.seed})",
    })  # fmt: skip


if __name__ == "__main__":
    main()

"""Warm ``long_arithmetic`` students by SFT on a teacher's samples to their plateau, one per seed.

    python examples/evidence/warm_students.py --teacher DIR --shape 2,4,256 --seeds 0,1,2 \
        --steps 4000 --every 200 --out outputs/warm/wide --device cuda

The compare harness's warm-up stage, done outside it so that it can run on a lent GPU: per seed, the
teacher's temperature-1 samples of the training prompts (pool A, seeded by the seed; the last
``--validation`` training prompts are held out exactly as ``compare``'s ``validation.size`` holds
them out, so that no warm-up trains on the prompts the harness chooses learning rates on), then a
student of ``--shape`` initialized with the seed, trained on those samples (AdamW, constant rate
after a 5% warm-up, batch 32), evaluated every ``--every`` steps on the validation prompts (greedy
exact match) and saved as ``<out>/seed-<s>/step-<n>``. The plateau is the harness's rule
(``onpolicy.compare.curves.plateau_step``, window 3, min_gain 0.03); ``<out>/seed-<s>/plateau``
links to it and ``curve.json`` lists the curve and the plateau step.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
import transformers

from onpolicy.compare.curves import plateau_step
from onpolicy.models import load_model
from onpolicy.tasks.arith_models import ModelSpec, char_tokenizer
from onpolicy.tasks.long_arithmetic import long_arithmetic_task
from onpolicy.tasks.long_models import _save, max_new_tokens
from onpolicy.tasks.supervised import complete_prompts, train_supervised


def teacher_pool(teacher, tok, prompts, digits: int, seed: int) -> list:
    """``prompts`` with their reference replaced by one temperature-1 teacher sample each."""
    torch.manual_seed(seed)
    samples = complete_prompts(
        teacher, tok, prompts, max_new_tokens(digits), batch_size=1024, temperature=1.0
    )
    return [replace(p, reference=s) for p, s in zip(prompts, samples, strict=True)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--shape", required=True, help="layers,heads,ffn of the student")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--digits", type=int, default=6)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--every", type=int, default=200)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--validation", type=int, default=200)
    p.add_argument("--min-share", type=float, default=0.0, help="plateau window share (0: fixed 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=0, help="only the first N training prompts (smoke)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    layers, heads, ffn = (int(x) for x in a.shape.split(","))
    tok = char_tokenizer()
    task = long_arithmetic_task(digits=a.digits, variants=4, num_train=8000, num_eval=200, seed=0)
    train, valid = task.train_prompts[: -a.validation], task.train_prompts[-a.validation :]
    if a.limit:
        train, valid = train[: a.limit], valid[: a.limit]
    teacher = load_model(a.teacher).to(a.device)
    for seed in (int(s) for s in a.seeds.split(",")):
        start = time.perf_counter()
        pool = teacher_pool(teacher, tok, list(train), a.digits, seed)
        right = task.mean_score([q.reference for q in pool], list(train)) or 0.0
        student = ModelSpec(layers=layers, heads=heads, ffn=ffn).build(tok, seed=seed)
        student = student.to(a.device)
        folder, curve = a.out / f"seed-{seed}", []

        def evaluate(
            step: int, student=student, folder=folder, curve=curve, start=start, seed=seed
        ):
            if step % a.every:
                return
            texts = complete_prompts(student, tok, list(valid), max_new_tokens(a.digits))
            entry = {"step": step, "score": task.mean_score(texts, list(valid)) or 0.0,
                     "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            curve.append(entry)
            print(f"[{a.out.name} seed {seed}] {json.dumps(entry)}", flush=True)
            _save(student, folder / f"step-{step}", {
                **entry, "teacher": str(a.teacher), "recipe": f"SFT on teacher pool (seed "
                f"{seed}), shape {a.shape}, lr {a.lr} constant, batch 32",
            })  # fmt: skip
            student.train()

        train_supervised(student, tok, pool, a.steps, 32, a.lr, seed, evaluate, "constant")
        points = [SimpleNamespace(step=e["step"], score=e["score"]) for e in curve]
        step, reached = plateau_step(points, window=3, min_gain=0.03, min_share=a.min_share)
        (folder / "plateau").unlink(missing_ok=True)
        (folder / "plateau").symlink_to(f"step-{step}")
        (folder / "curve.json").write_text(json.dumps({
            "curve": curve, "plateau": step, "reached": reached, "pool_right": right,
            "params": sum(q.numel() for q in student.parameters()), "shape": a.shape,
            "teacher": str(a.teacher), "device": a.device,
        }, indent=1))  # fmt: skip
        took = time.perf_counter() - start
        print(f"[{a.out.name} seed {seed}] plateau step {step} (reached {reached}); teacher "
              f"pool right {right:.3f}; {took:.0f}s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

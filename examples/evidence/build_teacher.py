"""Train a ``long_arithmetic`` teacher through a digit curriculum on any device, with checkpoints.

    python examples/evidence/build_teacher.py --shape 3,6,768 --stages 3:1500:1e-3,6:3000:1e-3 \
        --eval-every 250 --out outputs/teachers/large-6digit --device cuda

Each stage ``DIGITS:STEPS:LR`` is one cosine cycle of ``train_supervised`` on gold scratchpads of
that many digits (``min_digits`` = the stage's digits). Every ``--eval-every`` steps of the last
stage (and at each stage's end) the model is scored on the task's ``valid`` split of the last
stage's digits: greedy exact match and the exact match of its temperature-1 samples (the data SFT
learns from), and saved as ``<out>/step-<n>`` (n counts all stages' steps) with a ``build.json``.
``<out>/curve.json`` lists every evaluation. ``--pick-samples X`` then names the checkpoint whose
greedy match is within 0.02 of the best and whose sample match is closest to X (``<out>/picked``,
a symbolic link, and ``curve.json``'s ``picked``). Used to rebuild the issue-11 teachers on a lent
GPU (a 1.77M teacher takes ~1 h of 6-digit steps on the 2-core CPU, about a minute on a GPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers

from onpolicy.tasks.arith_models import ModelSpec, char_tokenizer
from onpolicy.tasks.long_arithmetic import long_arithmetic_task
from onpolicy.tasks.long_models import _save, max_new_tokens
from onpolicy.tasks.supervised import complete_prompts, train_supervised


def parse_stages(text: str) -> list[tuple[int, int, float]]:
    """``"3:1500:1e-3,6:3000:1e-3"`` -> ``[(3, 1500, 1e-3), (6, 3000, 1e-3)]``."""
    stages = []
    for part in text.split(","):
        digits, steps, lr = part.split(":")
        stages.append((int(digits), int(steps), float(lr)))
    return stages


def scores(model, tok, task, digits: int, n: int, seed: int) -> dict[str, float]:
    """Greedy and temperature-1 sample exact match on the first ``n`` ``valid`` prompts."""
    prompts = task.eval_prompts[:n]
    greedy = complete_prompts(model, tok, prompts, max_new_tokens(digits))
    torch.manual_seed(seed)
    sampled = complete_prompts(model, tok, prompts, max_new_tokens(digits), temperature=1.0)
    return {
        "greedy": task.mean_score(greedy, prompts) or 0.0,
        "samples": task.mean_score(sampled, prompts) or 0.0,
    }


def pick(curve: list[dict], target: float) -> dict:
    """The evaluation whose greedy match is within 0.02 of the best and whose sample match is
    closest to ``target`` (the latest one on ties)."""
    best = max(e["greedy"] for e in curve)
    good = [e for e in curve if e["greedy"] >= best - 0.02]
    return min(reversed(good), key=lambda e: abs(e["samples"] - target))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", required=True, help="layers,heads,ffn (hidden = 32 * heads)")
    p.add_argument("--stages", required=True, help="DIGITS:STEPS:LR[,...], one cosine cycle each")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-prompts", type=int, default=400)
    p.add_argument("--seed", type=int, default=0, help="initialization and data order")
    p.add_argument("--device", default="cpu")
    p.add_argument("--pick-samples", type=float, default=None)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    layers, heads, ffn = (int(x) for x in a.shape.split(","))
    stages = parse_stages(a.stages)
    tok = char_tokenizer()
    model = ModelSpec(layers=layers, heads=heads, ffn=ffn).build(tok, seed=a.seed).to(a.device)
    params = sum(q.numel() for q in model.parameters())
    a.out.mkdir(parents=True, exist_ok=True)
    curve: list[dict] = []
    start, done = time.perf_counter(), 0
    for index, (digits, steps, lr) in enumerate(stages):
        task = long_arithmetic_task(
            digits=digits, variants=4, num_train=8000, seed=0, eval_split="valid",
            min_digits=digits,
        )  # fmt: skip
        last = index == len(stages) - 1

        def evaluate(step: int, task=task, digits=digits, base=done, steps=steps, last=last):
            if not (step == steps or (last and step % a.eval_every == 0)):
                return
            entry = {"step": base + step, "digits": digits,
                     **scores(model, tok, task, digits, a.eval_prompts, a.seed + step),
                     "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            curve.append(entry)
            print(f"[{a.out.name}] {json.dumps(entry)}", flush=True)
            _save(model, a.out / f"step-{base + step}", {
                **entry, "recipe": f"shape {a.shape}, stages {a.stages}, batch {a.batch}, "
                f"seed {a.seed}", "valid_exact_match": entry["greedy"],
            })  # fmt: skip
            model.train()

        train_supervised(
            model, tok, task.train_prompts, steps, a.batch, lr, a.seed + index, on_step=evaluate
        )
        done += steps
    record = {"shape": a.shape, "params": params, "stages": a.stages, "curve": curve,
              "seconds": time.perf_counter() - start, "device": a.device}  # fmt: skip
    if a.pick_samples is not None:
        chosen = pick([e for e in curve if e["digits"] == stages[-1][0]], a.pick_samples)
        record["picked"] = chosen
        link = a.out / "picked"
        link.unlink(missing_ok=True)
        link.symlink_to(f"step-{chosen['step']}")
    (a.out / "curve.json").write_text(json.dumps(record, indent=1))
    print(f"[{a.out.name}] {params:,} params, {record['seconds']:.0f}s; picked "
          f"{record.get('picked')}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""Diagnostics of a ``long_arithmetic`` comparison run by the harness (``onpolicy compare``), on the
held-out prompts: where errors start and how the teacher-scored reverse KL is spread over the
output, for the start weights (the warm-up branch) and every method's final student.

    python examples/evidence/harness_diagnostics.py teacher --config CONFIG [--greedy valid,test]
        # the teacher's greedy exact match (valid, test) and its temperature-1 samples' accuracy
        # on training prompts (the data SFT learns from), with survival by step
    python examples/evidence/harness_diagnostics.py runs --config CONFIG [--start plateau]
        # per method and seed: greedy survival by step; KL(student || teacher) per position of
        # the student's own samples (64 prompts), as thirds and per position; JSON to stdout
    python examples/evidence/harness_diagnostics.py warmup --config CONFIG CHECKPOINT...
        # greedy exact match and survival by step of warm-up checkpoints (validation split)
    python examples/evidence/harness_diagnostics.py export --config CONFIG CHECKPOINT --to DIR
        # a warm-up checkpoint as a student model folder

Nothing here trains; it reads the folders ``onpolicy compare`` left (``<output_dir>/runs/<start>/
<method>-seed<s>/final`` and the warm-up branch in ``<output_dir>/warm``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch

from examples.evidence.loop import greedy_eval, kl_profile, load_world
from onpolicy.api import rollout
from onpolicy.compare.config import load_config
from onpolicy.compare.model_dirs import resolve_models
from onpolicy.evidence.diagnostics import survival_by_step
from onpolicy.models import load_model, load_saved_weights
from onpolicy.rollout.base import make_backend
from onpolicy.tasks.base import make_task
from onpolicy.tasks.long_arithmetic import correct_steps
from onpolicy.types import SamplingParams

KL_PROMPTS = 64


def _world(cfg, split: str):
    dirs = resolve_models(cfg, log=lambda _: None)
    task = make_task(**{**cfg.task, "eval_split": split})
    world = load_world(
        task,
        dirs.teacher,
        cfg.train.max_new_tokens,
        dirs.student,
        prefix=correct_steps,
        num_steps=cfg.task["digits"],
    )
    return world, dirs


def teacher_report(cfg, n_samples: int, greedy: list[str]) -> dict:
    """Greedy exact match of the teacher on the ``greedy`` splits (valid / test); temperature-1
    sample accuracy and survival on the first ``n_samples`` training prompts (seed 0)."""
    out = {}
    world, _ = _world(cfg, "test")
    for split in greedy:
        world, _ = _world(cfg, split)
        score, _, mean_len, survival = greedy_eval(world.teacher, world, world.eval_prompts)
        out[f"greedy_{split}"] = {"exact_match": score, "mean_len": mean_len, "survival": survival}
    prompts = world.train_prompts[:n_samples]
    backend = make_backend("hf", model=world.teacher, tokenizer=world.tokenizer, max_batch_size=256)
    sampling = SamplingParams(max_new_tokens=world.max_new_tokens, temperature=1.0, seed=0)
    ro = rollout(backend, prompts, world.tokenizer, sampling)
    scores = [world.score(t, p) for t, p in zip(ro.texts_B, prompts, strict=True)]
    prefix = [correct_steps(t, p) for t, p in zip(ro.texts_B, prompts, strict=True)]
    out["temperature1_train"] = {
        "prompts": len(prompts),
        "exact_match": sum(scores) / len(scores),
        "survival": survival_by_step(prefix, world.num_steps),
    }
    return out


def _thirds(kl: list[float]) -> list[float]:
    vals = [x for x in kl if x == x]  # NaN: a position no sample reached
    n = len(vals)
    cuts = [0, n // 3, 2 * n // 3, n]
    return [statistics.mean(vals[a:b]) for a, b in itertools.pairwise(cuts) if b > a]


def _measure(model, world, seed: int) -> dict:
    score, _, mean_len, survival = greedy_eval(model, world, world.eval_prompts)
    kl = kl_profile(model, world, world.eval_prompts[:KL_PROMPTS], seed)
    return {"score": score, "mean_len": mean_len, "survival": survival, "kl_by_position": kl,
            "kl_thirds": _thirds(kl)}  # fmt: skip


def runs_report(cfg, start: str) -> dict:
    """Diagnostics of the start weights and of every final student from ``start``."""
    world, dirs = _world(cfg, "test")
    out_dir = Path(cfg.output_dir)
    warm = {}
    for rec in out_dir.glob("warm/*/seed*/warm.json"):
        data = json.loads(rec.read_text())
        for b in data["branches"]:
            if b["name"] == start:
                warm[data["seed"]] = b["path"]
    out: dict = {"start": {}, "runs": {}}
    for seed, path in sorted(warm.items()):
        model = load_model(dirs.student, trainable=False)
        load_saved_weights(model, path)
        out["start"][seed] = _measure(model, world, seed)
    if not warm:  # no warm-up: the configured student is every seed's start
        out["start"][cfg.seeds[0]] = _measure(load_model(dirs.student, trainable=False), world, 0)
    runs_dir = out_dir / "runs" / ("" if start == "cold" else start)
    for final in sorted(runs_dir.glob("*-seed*/final")):
        method, seed = final.parent.name.rsplit("-seed", 1)
        model = load_model(str(final), trainable=False)
        out["runs"][f"{method}/{seed}"] = _measure(model, world, int(seed))
    return out


def warmup_report(cfg, checkpoints: list[str]) -> dict:
    """Greedy exact match and survival by step of warm-up checkpoints on the harness's validation
    split (the prompts the warm-up's curve and plateau are measured on)."""
    from onpolicy.compare.training import split_prompts

    world, dirs = _world(cfg, "test")
    val = list(split_prompts(cfg, make_task(**cfg.task)).validation)
    out = {}
    for path in checkpoints:
        model = load_model(dirs.student, trainable=False)
        load_saved_weights(model, path)
        score, _, mean_len, survival = greedy_eval(model, world, val)
        out[path] = {"exact_match": score, "mean_len": mean_len, "survival": survival}
    return out


def export_start(cfg, checkpoint: str, to: str) -> dict:
    """The student at a warm-up checkpoint as a model folder (for ``models: {kind: paths}``)."""
    from onpolicy.models import load_tokenizer, save_student

    dirs = resolve_models(cfg, log=lambda _: None)
    model = load_model(dirs.student, trainable=False)
    load_saved_weights(model, checkpoint)
    save_student(model, load_tokenizer(dirs.student), to)
    return {"checkpoint": checkpoint, "saved": to}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["teacher", "runs", "warmup", "export"])
    ap.add_argument("--to", help="export: the model folder to write")
    ap.add_argument("checkpoints", nargs="*", help="warmup: checkpoint folders")
    ap.add_argument("--config", required=True)
    ap.add_argument("--start", default="plateau")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--greedy", default="", help="greedy splits: valid,test")
    args = ap.parse_intermixed_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    if args.what == "teacher":
        data = teacher_report(cfg, args.samples, [x for x in args.greedy.split(",") if x])
    elif args.what == "export":
        data = export_start(cfg, args.checkpoints[0], args.to)
    elif args.what == "warmup":
        data = warmup_report(cfg, args.checkpoints)
    else:
        data = runs_report(cfg, args.start)
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()

"""The regime experiment (issue 11): does on-policy distillation beat continued SFT on teacher
samples at equal FLOPs, from a warm student, on long outputs, with a teacher >= 20x the student?

Stages (each writes JSON under ``--out``; later stages read earlier ones; reruns skip done runs):

    python examples/evidence/experiment.py warmup    # SFT from cold on teacher pool A, valid
                                                     # curve, checkpoints; picks the starts
    python examples/evidence/experiment.py lr-grid   # each arm x lr grid from the plateau, seed
                                                     # 0, on the VALID split; picks each arm's lr
    python examples/evidence/experiment.py main      # starts x arms x seeds on the TEST split

Task ``long_arithmetic`` (``--regime long``: 6-digit addition, 63-token scratchpads; ``short``: 3
digits, 33 tokens; each step written in one of 4 valid orders),
teacher and student from ``onpolicy.tasks.long_models`` (cached). Continued SFT and GKD's
off-policy half train on teacher pool B (one temperature-1 teacher sample per training prompt,
distinct from the warm-up's pool A); ``flops_paid`` charges each distinct sample's generation once.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch

from examples.evidence.loop import ARMS, load_world, save_result, teacher_pool, train_arm
from onpolicy.evidence.diagnostics import plateau_index
from onpolicy.tasks.long_arithmetic import correct_steps, long_arithmetic_task
from onpolicy.tasks.long_models import LongModelsConfig, long_models, max_new_tokens

REGIMES = {  # output length: 6-digit problems (62 + EOS tokens) and 3-digit ones (32 + EOS)
    "long": LongModelsConfig(digits=6, teacher_steps=2500),  # 1000 steps: 0.435 valid; 2500: 1.000
    "short": LongModelsConfig(digits=3, teacher_steps=800),
}
NUM_EVAL = 200
WARMUP_LR, WARMUP_STEPS, SAVE_EVERY, WARMUP_STAGES = 2e-3, 1200, 100, 3
LR_GRID = (3e-4, 1e-3, 3e-3)
MIN_RISE = 0.1  # a warm-up curve must rise this much before it can plateau
RKL_STEPS = 60  # the budget: this many reverse-KL steps' FLOPs (data free), for every arm


STUDENT = os.environ.get("EVIDENCE_STUDENT", "medium")  # a name in LongModelsConfig.students


def _world(split: str, regime: str):
    cfg = REGIMES[regime]
    models = long_models(cfg)
    task = long_arithmetic_task(
        digits=cfg.digits,
        variants=cfg.variants,
        num_train=cfg.num_train,
        num_eval=NUM_EVAL,
        seed=cfg.data_seed,
        eval_split=split,
    )
    student = models.student_dirs[STUDENT]
    new = max_new_tokens(cfg.digits)
    world = load_world(
        task, models.teacher_dir, new, student, prefix=correct_steps, num_steps=cfg.digits
    )
    return world, models


def _pool(world, out: Path, name: str) -> list[str]:
    return teacher_pool(world, {"A": 1000, "B": 2000}[name], out / f"pool_{name}.json")


def _row_positions(world) -> float:
    """Mean prompt + gold completion + EOS positions of a training row (char tokens)."""
    rows = [len(p.text) + len(p.reference) + 1 for p in world.train_prompts]
    return sum(rows) / len(rows)


def budget(world) -> float:
    """``RKL_STEPS`` reverse-KL steps of 32 rows at the gold mean length (data free)."""
    return RKL_STEPS * 32 * _row_positions(world) * (8 * world.n_student + 2 * world.n_teacher)


def _merge(merged: dict | None, run: dict) -> dict:
    """Append a warm-up stage's curve and checkpoints (steps and FLOPs offset by the stages
    before it) to ``merged`` = ``{"curve": [...], "saved": [[step, dir], ...]}``."""
    if merged is None:
        merged = {"curve": [], "saved": []}
    last = merged["curve"][-1] if merged["curve"] else {"step": 0, "flops_free": 0.0}
    skip = 1 if merged["curve"] else 0  # a later stage's step 0 is the last stage's end
    for p in run["curve"][skip:]:
        merged["curve"].append(
            {
                **p,
                "step": p["step"] + last["step"],
                "flops_free": p["flops_free"] + last["flops_free"],
            }
        )
    merged["saved"] += [
        [int(k) + last["step"], v]
        for k, v in sorted(run["saved"].items(), key=lambda kv: int(kv[0]))
    ]
    return merged


def _plateau(merged: dict) -> int | None:
    """The step where the valid curve flattened (past half its best score), or None; None too
    while the curve has not risen ``MIN_RISE`` above its start (a flat curve at ~0 is a student
    that has not started to learn, not a plateau)."""
    scores = [p["score"] for p in merged["curve"] if p["step"] % SAVE_EVERY < 2]
    steps = [p["step"] for p in merged["curve"] if p["step"] % SAVE_EVERY < 2]
    if max(scores) - scores[0] < MIN_RISE:
        return None
    first = next(i for i, sc in enumerate(scores) if sc >= 0.5 * max(scores))
    i = first + plateau_index(scores[first:], window=3, tol=0.02)
    return steps[i] if i < len(scores) - 1 else None


def warmup(out: Path, regime: str) -> None:
    """SFT from cold on pool A in stages of ``WARMUP_STEPS`` (each from the last checkpoint, a
    fresh optimizer) until the valid curve flattens or ``WARMUP_STAGES`` ran; picks the starts."""
    world, models = _world("valid", regime)
    pool = _pool(world, out, "A")
    _pool(world, out, "B")
    b = WARMUP_STEPS * 32 * 6 * world.n_student * _row_positions(world)  # ~WARMUP_STEPS steps
    record = out / "warmup.json"
    merged = json.loads(record.read_text()) if record.exists() else None
    if merged is not None and "arm" in merged:  # a single-stage record
        merged = _merge(None, merged)
    stage = 0 if merged is None else len({p.split("/stage")[-1][:1] for _, p in merged["saved"]})
    while (merged is None or _plateau(merged) is None) and stage < WARMUP_STAGES:
        start = models.student_dirs[STUDENT] if merged is None else merged["saved"][-1][1]
        res = train_arm(
            world,
            ARMS["sft"],
            start,
            stage,
            WARMUP_LR,
            b,
            pool,
            n_evals=WARMUP_STEPS // SAVE_EVERY,
            save_every=SAVE_EVERY,
            save_dir=out / "warmup" / f"stage{stage}",
        )
        merged = _merge(merged, asdict(res))
        record.write_text(json.dumps(merged, indent=1))
        stage += 1
    plateau = _plateau(merged) or merged["saved"][-1][0]
    saved = dict(merged["saved"])
    plateau_step = min(saved, key=lambda s: abs(s - plateau))
    early_step = min(saved, key=lambda s: abs(s - plateau_step / 2))  # half way
    starts = {
        "cold": str(models.student_dirs[STUDENT]),
        "early": saved[early_step],
        "plateau": saved[plateau_step],
    }
    curve = [(p["step"], p["score"]) for p in merged["curve"]]
    (out / "starts.json").write_text(json.dumps({"starts": starts, "curve": curve}, indent=1))
    print("starts:", starts, "valid curve:", curve)


def _job(args: tuple) -> str:
    regime, split, out, arm, start_name, start_dir, seed, lr, path, diag = args
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if Path(path).exists():
        return f"{path} (done)"
    world, _ = _world(split, regime)
    pool = _pool(world, Path(out), "B")
    res = train_arm(world, ARMS[arm], start_dir, seed, lr, budget(world), pool, diag=diag)
    res.start, res.start_dir = start_name, str(start_dir)
    save_result(res, Path(path))
    last = res.curve[-1]
    return f"{path}: {last.score:.3f} after {res.steps} steps, {res.wall_s:.0f}s"


def _run(jobs: list[tuple], workers: int) -> None:
    if workers == 1:
        for j in jobs:
            print(_job(j), flush=True)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for line in pool.map(_job, jobs):
            print(line, flush=True)


def lr_grid(out: Path, regime: str, workers: int, arms: list[str]) -> None:
    starts = json.loads((out / "starts.json").read_text())["starts"]
    jobs = [
        (
            regime,
            "valid",
            str(out),
            arm,
            "plateau",
            starts["plateau"],
            0,
            lr,
            str(out / "lr" / f"{arm}-lr{lr:g}.json"),
            False,
        )
        for arm in arms
        for lr in LR_GRID
        if ARMS[arm].horizon is None  # a horizon arm takes reverse_kl's rate
    ]
    _run(jobs, workers)
    chosen = {}
    for arm in (a for a in arms if ARMS[a].horizon is None):
        finals = {}
        for lr in LR_GRID:
            curve = json.loads((out / "lr" / f"{arm}-lr{lr:g}.json").read_text())["curve"]
            finals[lr] = sum(p["score"] for p in curve[-3:]) / 3  # mean of the last 3 evals
        chosen[arm] = {"lr": max(finals, key=finals.get), "valid_last3": finals}
    (out / "lrs.json").write_text(json.dumps(chosen, indent=1))
    print(json.dumps(chosen, indent=1))


def main_grid(
    out: Path, regime: str, workers: int, arms: list[str], starts_sel: list[str], seeds: list[int]
) -> None:
    starts = json.loads((out / "starts.json").read_text())["starts"]
    lrs = json.loads((out / "lrs.json").read_text())
    jobs = [
        (
            regime,
            "test",
            str(out),
            arm,
            s,
            starts[s],
            seed,
            lrs[arm if ARMS[arm].horizon is None else "reverse_kl"]["lr"],
            str(out / "main" / f"{s}-{arm}-seed{seed}.json"),
            seed == 0,
        )
        for seed in seeds
        for s in starts_sel
        for arm in arms
    ]
    _run(jobs, workers)


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["warmup", "lr-grid", "main"])
    p.add_argument("--regime", choices=sorted(REGIMES), default="short")
    p.add_argument("--out", type=Path, default=None, help="default outputs/evidence/<regime>")
    p.add_argument("--workers", type=int, default=int(os.environ.get("EVIDENCE_WORKERS", "2")))
    p.add_argument("--arms", default="sft,reverse_kl,gkd,rkl_h16")
    p.add_argument("--starts", default="plateau,early,cold")
    p.add_argument("--seeds", default="0,1,2")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    a.out = a.out or Path("outputs/evidence") / f"{a.regime}-{STUDENT}"
    a.out.mkdir(parents=True, exist_ok=True)
    arms = a.arms.split(",")
    if a.stage == "warmup":
        warmup(a.out, a.regime)
    elif a.stage == "lr-grid":
        lr_grid(a.out, a.regime, a.workers, arms)
    else:
        seeds = [int(s) for s in a.seeds.split(",")]
        main_grid(a.out, a.regime, a.workers, arms, a.starts.split(","), seeds)


if __name__ == "__main__":
    cli()

"""One arm of the regime experiment: train a student from a start folder with one method, and
evaluate it along the way (a learning curve against cumulative FLOPs, in two accountings).

Built on the engine's Python API (``rollout`` / ``score`` / ``loss`` / ``step``) and its
objectives, so every loss is the engine's own (the reverse KL was checked in lock-step against
TRL's ``DistillationTrainer``). What this adds, for the experiment only:

- learning curves: greedy exact match on an evaluation split at step 0, a few early steps (the
  early drop) and every ``budget / n_evals`` FLOPs, with the score per output length;
- both accountings: ``flops_free`` counts the trainer's formula (``ComputeBudget.flops``: 6 N_s per
  trained position, 2 N_s per generated, 2 N_t per teacher-scored); ``flops_paid`` adds 2 N_t per
  position of each distinct teacher sample the run trains on (its generation), once;
- horizon control: on-policy rollouts cut at ``Arm.horizon`` tokens (the loss sees the prefix);
- the teacher-scored reverse KL on the student's own samples, by position (start and end).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from onpolicy.api import completion_rollout, loss, make_objective, rollout, step
from onpolicy.evidence.diagnostics import (
    completion_logits,
    reverse_kl_by_position,
    score_by_bucket,
    survival_by_step,
)
from onpolicy.models import load_model, load_tokenizer, save_student
from onpolicy.rollout.base import make_backend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.trainer.step_metrics import ComputeBudget, positions
from onpolicy.types import PaddedBatch, Prompt, SamplingParams

EARLY_STEPS = (2, 5, 10)  # extra evaluations that measure the early drop


@dataclass(frozen=True)
class Arm:
    """A method of the experiment: an engine objective, its params, an optional horizon (max
    tokens of an on-policy rollout)."""

    name: str
    objective: str
    params: dict[str, Any] = field(default_factory=dict)
    horizon: int | None = None


ARMS = {
    a.name: a
    for a in (
        Arm("sft", "sft"),
        Arm("reverse_kl", "reverse_kl"),
        Arm("gkd", "gkd", {"lmbda": 0.5, "beta": 0.5, "off_policy": "teacher"}),
        Arm("rkl_h16", "reverse_kl", horizon=16),
        Arm("rkl_h32", "reverse_kl", horizon=32),
    )
}


@dataclass
class World:
    """What every run of one experiment shares (loaded once per process)."""

    train_prompts: list[Prompt]
    eval_prompts: list[Prompt]
    score: Any  # the task's ScoreFn
    teacher: Any
    tokenizer: Any
    n_student: int
    n_teacher: int
    max_new_tokens: int
    prefix: Any = None  # (completion, prompt) -> leading right steps (the task's), or None
    num_steps: int = 0


@dataclass
class EvalPoint:
    """One point of a learning curve."""

    step: int
    flops_free: float
    flops_paid: float
    seconds: float
    score: float
    by_length: dict[int, float]
    mean_len: float
    survival: list[float] = field(default_factory=list)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def greedy_eval(
    model, world: World, prompts: list[Prompt]
) -> tuple[float, dict[int, float], float]:
    """``(exact match, {reference length: exact match}, mean completion tokens)``, greedy."""
    backend = make_backend("hf", model=model, tokenizer=world.tokenizer, max_batch_size=256)
    sampling = SamplingParams(max_new_tokens=world.max_new_tokens, temperature=0)
    ro = rollout(backend, prompts, world.tokenizer, sampling)
    scores = [world.score(t, p) for t, p in zip(ro.texts_B, prompts, strict=True)]
    buckets = score_by_bucket([len(p.reference) for p in prompts], scores)
    mean_len = sum(len(c) for c in ro.completion_ids_B) / len(prompts)
    survival = []
    if world.prefix is not None:
        prefix = [world.prefix(t, p) for t, p in zip(ro.texts_B, prompts, strict=True)]
        survival = survival_by_step(prefix, world.num_steps)
    by_len = {k: v for k, (v, _) in buckets.items()}
    return sum(scores) / len(scores), by_len, mean_len, survival


@torch.no_grad()
def kl_profile(model, world: World, prompts: list[Prompt], seed: int) -> list[float]:
    """Teacher-scored KL(student || teacher) per completion position of the student's own samples
    (temperature 1) on ``prompts``."""
    backend = make_backend("hf", model=model, tokenizer=world.tokenizer, max_batch_size=256)
    sampling = SamplingParams(max_new_tokens=world.max_new_tokens, temperature=1.0, seed=seed)
    ro = rollout(backend, prompts, world.tokenizer, sampling)
    batch = PaddedBatch.from_ragged(
        ro.prompt_ids_B, ro.completion_ids_B, world.tokenizer.pad_token_id
    )
    lens_p = [len(p) for p in ro.prompt_ids_B]
    lens_c = [len(c) for c in ro.completion_ids_B]
    out = []
    for m in (model, world.teacher):
        logits = m(input_ids=batch.input_ids_B_T, attention_mask=batch.attention_mask_B_T).logits
        out.append(completion_logits(logits, lens_p, lens_c)[0])
    mask = completion_logits(logits, lens_p, lens_c)[1]
    return reverse_kl_by_position(out[0], out[1], mask)[0]


def teacher_pool(world: World, seed: int, cache: Path) -> list[str]:
    """One teacher sample (temperature 1) per training prompt, cached in ``cache``."""
    if cache.exists():
        return json.loads(cache.read_text())
    backend = make_backend("hf", model=world.teacher, tokenizer=world.tokenizer, max_batch_size=256)
    sampling = SamplingParams(max_new_tokens=world.max_new_tokens, temperature=1.0, seed=seed)
    ro = rollout(backend, world.train_prompts, world.tokenizer, sampling)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(ro.texts_B))
    return ro.texts_B


def load_world(
    task, teacher_dir: str | Path, max_new_tokens: int, student_dir: str | Path, **extra
) -> World:
    """The shared parts of a run: the task's prompts, the teacher, the sizes (``extra``: the
    ``prefix`` / ``num_steps`` fields)."""
    teacher = load_model(teacher_dir, trainable=False)
    return World(
        train_prompts=list(task.train_prompts),
        eval_prompts=list(task.eval_prompts),
        score=task.score,
        teacher=teacher,
        tokenizer=load_tokenizer(teacher_dir),
        n_student=_params(load_model(student_dir, trainable=False)),
        n_teacher=_params(teacher),
        max_new_tokens=max_new_tokens,
        **extra,
    )


@dataclass
class RunResult:
    """A run's curve and diagnostics (JSON-able)."""

    arm: str
    seed: int
    lr: float
    start: str
    steps: int
    wall_s: float
    curve: list[EvalPoint]
    kl_start: list[float] = field(default_factory=list)
    kl_end: list[float] = field(default_factory=list)
    saved: dict[int, str] = field(default_factory=dict)
    start_dir: str = ""


def _batch(world: World, arm: Arm, obj, i: int, idx: list[int], pool: list[str], backend):
    """The step's rollout: the student's own samples (on-policy) or the pool's teacher samples."""
    prompts = [world.train_prompts[j] for j in idx]
    if obj.batch_source(i) == "student":
        horizon = arm.horizon or world.max_new_tokens
        sampling = SamplingParams(
            max_new_tokens=min(horizon, world.max_new_tokens), temperature=1.0
        )
        return rollout(backend, prompts, world.tokenizer, sampling), True
    return completion_rollout(prompts, [pool[j] for j in idx], world.tokenizer), False


def train_arm(
    world: World,
    arm: Arm,
    start_dir: str | Path,
    seed: int,
    lr: float,
    budget_flops: float,
    pool: list[str],
    batch_size: int = 32,
    n_evals: int = 10,
    diag: bool = False,
    save_every: int = 0,
    save_dir: Path | None = None,
) -> RunResult:
    """Train ``arm`` from ``start_dir`` until ``flops_free`` reaches ``budget_flops``; AdamW at a
    constant ``lr``, gradient clipping 1.0, one batch of ``batch_size`` prompts per step."""
    torch.manual_seed(seed)
    student = load_model(start_dir, trainable=True)
    tok = world.tokenizer
    backend = make_backend("hf", model=student, tokenizer=tok, max_batch_size=256)
    teacher = LocalTeacher(world.teacher, tok, tok, mode="same")
    params = {**arm.params, **({"seed": seed} if arm.objective == "gkd" else {})}
    obj = make_objective(arm.objective, **params)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    rng, order = random.Random(seed), []
    spent, paid_positions, used = ComputeBudget(), 0, set()
    start, curve, saved = time.perf_counter(), [], {}
    next_free, next_paid, i = 0.0, 0.0, 0
    result = RunResult(arm.name, seed, lr, str(start_dir), 0, 0.0, curve, saved=saved)
    if diag:
        result.kl_start = kl_profile(student, world, world.eval_prompts[:64], seed)
    while True:
        free = spent.flops(world.n_student, world.n_teacher)
        paid = free + 2.0 * world.n_teacher * paid_positions
        # evaluate on a grid of both accountings (they differ for runs on teacher samples)
        on_grid = free >= next_free or budget_flops >= paid >= next_paid
        if on_grid or i in EARLY_STEPS or free >= budget_flops:
            s, by_len, mean_len, surv = greedy_eval(student, world, world.eval_prompts)
            seconds = time.perf_counter() - start
            curve.append(EvalPoint(i, free, paid, seconds, s, by_len, mean_len, surv))
            while next_free <= free:
                next_free += budget_flops / n_evals
            while next_paid <= paid:
                next_paid += budget_flops / n_evals
        if free >= budget_flops:
            break
        if len(order) < batch_size:
            fresh = list(range(len(world.train_prompts)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[:batch_size], order[batch_size:]
        ro, on_policy = _batch(world, arm, obj, i, idx, pool, backend)
        n_pos = positions(ro)
        if not on_policy:  # each distinct teacher sample is paid once, at its first use
            new = [k for k, j in enumerate(idx) if j not in used]
            used.update(idx)
            paid_positions += sum(
                len(ro.prompt_ids_B[k]) + len(ro.completion_ids_B[k]) for k in new
            )
        scores = teacher.score(ro) if obj.needs_teacher else None
        step(opt, loss(obj, student, ro, scores), model=student, max_grad_norm=1.0)
        spent = spent.add(
            ComputeBudget(
                student_gen_tokens=n_pos if on_policy else 0,
                student_train_tokens=n_pos,
                teacher_tokens=n_pos if obj.needs_teacher else 0,
            )
        )
        i += 1
        if save_every and save_dir is not None and i % save_every == 0:
            saved[i] = str(save_student(student, tok, save_dir / f"step{i}"))
    result.steps, result.wall_s = i, time.perf_counter() - start
    if diag:
        result.kl_end = kl_profile(student, world, world.eval_prompts[:64], seed)
    return result


def save_result(result: RunResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=1))

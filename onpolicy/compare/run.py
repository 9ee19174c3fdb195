"""Run a comparison: resolve the models once, evaluate the teacher, then train and evaluate every
(method, seed) job, in parallel worker processes when ``workers > 1``. A job that raises is recorded
as failed (with its error) and the others go on."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from onpolicy.compare.budget import Plan, plan_runs
from onpolicy.compare.config import CompareConfig
from onpolicy.compare.evaluate import evaluate_model, num_params, size_on_disk
from onpolicy.compare.lr_search import choose as choose_lrs
from onpolicy.compare.methods import MethodSpec, RunOptions
from onpolicy.compare.model_dirs import ModelDirs, resolve_models
from onpolicy.compare.pool import run_calls
from onpolicy.compare.training import lr_trial, split_prompts, student_of, train_run, warm_up
from onpolicy.compare.warm import COLD, Start, seed_starts, starts_from
from onpolicy.errors import ConfigError
from onpolicy.tasks.base import Task, make_task
from onpolicy.trainer.step_metrics import ComputeBudget


@dataclass
class JobResult:
    """One (method, seed) run: its status, held-out metrics, budget and model sizes."""

    method: str
    seed: int
    status: str  # "ok" | "failed"
    error: str | None = None
    score: float | None = None
    kl_per_char: float | None = None
    agreement: float | None = None
    latency_s: float | None = None
    tokens_per_s: float | None = None
    budget: dict[str, float] = field(default_factory=dict)
    flops: float | None = None
    steps: int | None = None  # optimizer steps it trained (the budget plan's)
    params: int | None = None
    disk_bytes: int | None = None
    losses: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    start: str = "cold"  # cold, or the warm-up branch it trained from (step<k> / plateau)
    start_step: int = 0  # the warm-up step of that branch
    lr: float | None = None  # its learning rate (lr_search's choice, else train.lr)
    flops_free: float | None = None  # training FLOPs with the teacher's data free / paid
    flops_paid: float | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)  # curves.CurvePoint records
    repetition: float | None = None  # greedy held-out completions at the end (evaluate.py)
    cut_share: float | None = None  # share of them cut at the length limit


def _load(path: str, trainable: bool) -> tuple[Any, Any]:
    from onpolicy.models import load_model, load_tokenizer

    return load_model(path, trainable=trainable), load_tokenizer(path)


def max_new_tokens(cfg: CompareConfig) -> int:
    return cfg.eval_max_new_tokens or cfg.train.max_new_tokens


def evaluate_teacher(cfg: CompareConfig, dirs: ModelDirs, task: Task) -> JobResult:
    """The teacher's own row (its greedy texts are what students' agreement is measured against)."""
    model, tok = _load(dirs.teacher, trainable=False)
    ev = evaluate_model(model, tok, task, max_new_tokens(cfg))
    return JobResult(
        method="teacher",
        seed=0,
        status="ok",
        score=ev.score,
        latency_s=ev.latency_s,
        tokens_per_s=ev.tokens_per_s,
        params=num_params(model),
        disk_bytes=size_on_disk(dirs.teacher),
        samples=ev.texts,
        repetition=ev.repetition,
        cut_share=ev.cut_share,
    )


def run_job(
    cfg: CompareConfig,
    dirs: ModelDirs,
    spec: MethodSpec,
    seed: int,
    teacher_texts: list[str],
    threads: int = 1,
    steps: int | None = None,
    start: Start = COLD,
    lr: float | None = None,
) -> JobResult:
    """Train ``spec`` from ``start`` (the initial student, or a warm-up branch) with ``seed`` for
    ``steps`` optimizer steps (None: ``cfg.train.steps``) at ``lr`` (None: ``cfg.train.lr``) and
    evaluate it on the held-out prompts; never raises. With ``reuse_runs``, a finished identical
    run is read back instead (``compare.reuse``)."""
    from onpolicy.compare import reuse

    torch.set_num_threads(threads)
    train = dataclasses.replace(
        cfg.train,
        steps=cfg.train.steps if steps is None else steps,
        lr=cfg.train.lr if lr is None else lr,
    )
    texts = {"teacher_texts": reuse.warm_key({"t": teacher_texts})}
    key = reuse.run_key(cfg, dirs, spec, seed, train, start.init_from, texts)
    stored = reuse.load(cfg, "job", key)
    if stored is not None:
        return JobResult(**{**stored, "start": start.name, "start_step": start.step})
    result = _run_job(cfg, dirs, spec, seed, teacher_texts, train, start)
    if result.status == "ok":
        reuse.save(cfg, "job", key, asdict(result))
    return result


def _run_job(
    cfg: CompareConfig,
    dirs: ModelDirs,
    spec: MethodSpec,
    seed: int,
    teacher_texts: list[str],
    train: Any,
    start: Start,
) -> JobResult:
    """``run_job`` without reuse: train and evaluate (``train``: the run's settings)."""
    head = {"method": spec.name, "seed": seed, "start": start.name, "start_step": start.step}
    try:
        task = make_task(**cfg.task)
        if student_of(dirs, spec) is None:
            raise ConfigError(
                f"method {spec.name!r} needs models.{spec.student}_student "
                "(student / cross_student) in the config"
            )
        student, stok, out = _train(
            dataclasses.replace(cfg, train=train), dirs, spec, seed, task, start
        )
        teacher, ttok = _load(dirs.teacher, trainable=False)
        ev = evaluate_model(
            student, stok, task, max_new_tokens(cfg), (teacher, ttok), teacher_texts, seed
        )
        n_s, n_t = num_params(student), num_params(teacher)
        recorded = out.budget.flops(n_s, n_t)
        flops = out.account.flops if out.account else None
        return JobResult(
            **head,
            status="ok",
            score=ev.score,
            kl_per_char=ev.kl_per_char,
            agreement=ev.agreement,
            latency_s=ev.latency_s,
            tokens_per_s=ev.tokens_per_s,
            budget=asdict(out.budget),
            flops=recorded,
            params=n_s,
            disk_bytes=size_on_disk(student_of(dirs, spec)),
            losses=out.losses,
            samples=ev.texts[:5],
            steps=0 if spec.objective == "none" else train.steps,
            lr=None if spec.objective == "none" else train.lr,
            flops_free=recorded if flops is None else flops.free,
            flops_paid=recorded if flops is None else flops.paid,
            curve=[vars(p) for p in out.account.curve] if out.account else [],
            repetition=ev.repetition,
            cut_share=ev.cut_share,
        )
    except Exception as exc:  # a failing method is a row of the report, not a crash
        tail = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return JobResult(
            **head, status="failed", error=f"{type(exc).__name__}: {exc}"[:300] or tail
        )


@dataclass
class _Trained:
    """What ``_train`` hands back besides the student: budget, losses, account (None: no trainer
    run, e.g. the untouched student or TRL's SFT)."""

    budget: ComputeBudget
    losses: list[float]
    account: Any = None


def _train(
    cfg: CompareConfig, dirs: ModelDirs, spec: MethodSpec, seed: int, task: Task, start: Start
) -> tuple[Any, Any, _Trained]:
    """``(trained student, its tokenizer, _Trained)``: the untouched student (at ``start``) as is,
    TRL's ``SFTTrainer`` for ``trl_sft``, else a run of ``onpolicy.trainer.train`` (checkpoints
    removed after; the student is in ``<output_dir>/runs/[<start>/]<method>-seed<seed>/final``)."""
    student_dir = student_of(dirs, spec)
    if spec.objective == "none":
        student, stok = _load(student_dir, trainable=False)
        if start.init_from is not None:
            from onpolicy.models import load_saved_weights

            load_saved_weights(student, start.init_from)
        return student, stok, _Trained(ComputeBudget(), [])
    split = split_prompts(cfg, task)
    if spec.objective == "trl_sft":
        from onpolicy.compare.trl_sft import train_trl_sft

        if start.init_from is not None:
            raise ConfigError("trl_sft does not branch from a warm start; use sft")
        student, stok = _load(student_dir, trainable=True)
        teacher, ttok = _load(dirs.teacher, trainable=False)
        unknown = set(spec.params) - {"shuffle", "text"}
        if unknown:
            raise ConfigError(f"trl_sft takes the params shuffle, text; got {sorted(unknown)}")
        budget, losses = train_trl_sft(
            student, stok, teacher, ttok, list(split.train), cfg.train, seed, **spec.params
        )
        return student, stok, _Trained(budget, losses)
    sub = "" if start.name == "cold" else f"{start.name}/"
    run_dir = Path(cfg.output_dir) / "runs" / f"{sub}{spec.name}-seed{seed}"
    held_out = task.eval_prompts if cfg.eval_every else ()
    n_eval = min(cfg.eval_prompts or len(held_out), len(held_out))
    options = RunOptions(
        cfg.eval_every, n_eval, start.init_from, sample_seed=_sample_seed(cfg),
        forward_nll=cfg.eval_forward_nll,
    )  # fmt: skip
    out = train_run(
        cfg, dirs, spec, seed, cfg.train, run_dir, options, split.train, held_out, task.score
    )
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the final student is kept
    student, stok = _load(out.final_dir, trainable=False)
    return student, stok, _Trained(ComputeBudget(**out.budget), out.losses, out.account)


def _sample_seed(cfg: CompareConfig) -> int | None:
    """With a shared warm-up every seed trains on its teacher samples (its dataset: the first
    seed's draw); else each seed draws its own (None)."""
    w = cfg.warm_start
    return cfg.seeds[0] if w is not None and w.shared else None


@dataclass
class Extras:
    """What a comparison ran besides its jobs: the warm-ups (``warm.json`` records per seed), the
    learning-rate trials and the chosen rates ``{(method, start): lr}``."""

    warm: list[dict[str, Any]] = field(default_factory=list)
    lr_trials: list[dict[str, Any]] = field(default_factory=list)
    lr_chosen: dict[tuple[str, str], float] = field(default_factory=dict)


def run_compare(
    cfg: CompareConfig, log: Callable[[str], None] = print, progress: bool = True
) -> tuple[JobResult, list[JobResult], ModelDirs, float, Plan, Extras]:
    """The warm-ups (``warm_start``), the learning-rate trials (``lr_search``), then every
    (start, method, seed) job plus the teacher's row, each job trained for the steps its budget
    plan gives it (``compare.budget``); returns (teacher, jobs, dirs, seconds, plan, extras).

    Two start points at the same warm-up step (e.g. the plateau found at an explicit branch step)
    have the same weights: their identical runs (and LR trials) run once and are reported under
    both names."""
    start = time.perf_counter()
    # tiny models gain nothing from more threads, and oversubscribed cores slow torch down 10x
    threads = int(os.environ.get("ONPOLICY_THREADS", "1"))
    torch.set_num_threads(threads)
    dirs = resolve_models(cfg, log)
    task = make_task(**cfg.task)
    split_prompts(cfg, task)  # a validation split too large for the task fails here
    teacher = evaluate_teacher(cfg, dirs, task)
    log(f"[compare] teacher {cfg.task['name']} score: {teacher.score}")
    plan = plan_runs(cfg, dirs, task, teacher.params or 0)
    if cfg.budget.match == "flops":
        log(f"[compare] equal FLOPs: steps per (method, seed) {_steps_line(plan)}")
    extras, starts = Extras(), {seed: [COLD] for seed in cfg.seeds}
    warmed = seed_starts(cfg.models, cfg.seeds)  # students warmed outside the harness
    if warmed is not None:
        starts = {seed: [warmed[seed]] for seed in cfg.seeds}
        where = ", ".join(f"seed {s} {w.init_from}" for s, w in warmed.items())
        log(f"[compare] warm starts: {where}")
    if cfg.warm_start is not None:
        shared = cfg.warm_start.shared  # one warm-up (the first seed's) for every seed
        calls = [
            (warm_up, (cfg, dirs, seed, threads)) for seed in cfg.seeds[: 1 if shared else None]
        ]
        extras.warm = run_calls(calls, cfg.workers, progress, "warm-up")
        for record in extras.warm:
            branches = ([COLD] if cfg.warm_start.cold else []) + starts_from(record)
            for seed in cfg.seeds if shared else [record["seed"]]:
                starts[seed] = branches
            log(f"[compare] warm-up seed {record['seed']}: {_branch_line(record)}")
    if cfg.lr_search is not None:
        extras.lr_trials, extras.lr_chosen = _search_lrs(cfg, dirs, starts, threads, progress)
    jobs = [(spec, seed, st) for seed in cfg.seeds for st in starts[seed] for spec in cfg.methods]
    calls, first = [], {}  # a run identical to an earlier one (same weights, seed, lr) runs once
    for spec, seed, st in jobs:
        lr, steps = extras.lr_chosen.get((spec.name, st.name)), plan.steps[(spec.name, seed)]
        args = (cfg, dirs, spec, seed, teacher.samples, threads, steps, st, lr)
        if first.setdefault((spec.name, seed, st.init_from, lr, steps), len(calls)) == len(calls):
            calls.append((run_job, args))
    done = run_calls(calls, cfg.workers, progress, "compare")
    results = []
    for spec, seed, st in jobs:
        lr, steps = extras.lr_chosen.get((spec.name, st.name)), plan.steps[(spec.name, seed)]
        res = done[first[(spec.name, seed, st.init_from, lr, steps)]]
        results.append(dataclasses.replace(res, start=st.name, start_step=st.step))
    return teacher, results, dirs, time.perf_counter() - start, plan, extras


def _search_lrs(
    cfg: CompareConfig,
    dirs: ModelDirs,
    starts: dict[int, list[Start]],
    threads: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], float]]:
    """Every grid trial (first seed's start points), and the rate chosen per (method, start)."""
    assert cfg.lr_search is not None
    wanted = cfg.lr_search.methods
    methods = [
        m
        for m in cfg.methods
        if m.objective not in ("none", "trl_sft") and (wanted is None or m.name in wanted)
    ]
    points = starts[cfg.seeds[0]]
    unique = list({st.init_from: st for st in points}.values())  # one per distinct weights
    calls = [
        (lr_trial, (cfg, dirs, m, st, lr, threads))
        for st in unique
        for m in methods
        for lr in cfg.lr_search.grid
    ]
    ran = run_calls(calls, cfg.workers, progress, "lr grid")
    by_weights = {st.name: st.init_from for st in unique}
    trials = [
        {**t, "start": st.name}
        for st in points
        for t in ran
        if by_weights[t["start"]] == st.init_from
    ]  # a start point at the same warm-up step as another shares its trials
    return trials, choose_lrs(trials, cfg.lr_search.criterion)


def _branch_line(record: dict[str, Any]) -> str:
    parts = []
    for b in record["branches"]:
        flag = "" if b["reached"] else " (plateau not reached)"
        parts.append(f"{b['name']} at step {b['step']}{flag}")
    cached = " (cached)" if record.get("cached") else ""
    return ", ".join(parts) + cached


def _steps_line(plan: Plan) -> str:
    return ", ".join(f"{m}/{seed}: {n}" for (m, seed), n in plan.steps.items())


def output_dir(cfg: CompareConfig) -> Path:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out

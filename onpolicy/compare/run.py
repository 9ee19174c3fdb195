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
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from onpolicy.compare.budget import Plan, plan_runs
from onpolicy.compare.config import CompareConfig
from onpolicy.compare.evaluate import evaluate_model, num_params, size_on_disk
from onpolicy.compare.methods import MethodSpec, trainer_config
from onpolicy.errors import ConfigError
from onpolicy.tasks.base import Task, make_task
from onpolicy.trainer.step_metrics import ComputeBudget


@dataclass
class ModelDirs:
    """Folders of the teacher, the same-tokenizer student and the other-tokenizer student."""

    teacher: str
    student: str | None
    cross_student: str | None


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


def _resolve_path(value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith("offline:"):
        from onpolicy import offline

        name = value.split(":", 1)[1]
        fn = getattr(offline, f"{name}_dir", None)
        if fn is None:
            raise ConfigError(
                f"unknown offline model {value!r}; use offline:smollm2 or offline:gemma3"
            )
        return str(fn())
    return value


def resolve_models(cfg: CompareConfig, log: Callable[[str], None] = print) -> ModelDirs:
    """Build (or find cached) the task's models, or resolve the configured folders."""
    spec = dict(cfg.models)
    kind = spec.pop("kind")
    if kind == "arithmetic":
        from onpolicy.tasks.arith_models import (
            ArithmeticModelsConfig,
            ModelSpec,
            arithmetic_models,
        )

        digits = cfg.task.get("digits", 3)
        for key in ("teacher", "student"):  # YAML gives {layers, heads, ffn}
            if isinstance(spec.get(key), dict):
                spec[key] = ModelSpec(**spec[key])
        kinds = {m.student for m in cfg.methods}
        which = (
            "teacher",
            *(
                name
                for kind, name in (("same", "student"), ("cross", "cross_student"))
                if kind in kinds
            ),
        )
        models = arithmetic_models(
            ArithmeticModelsConfig(digits=digits, **spec), log=log, which=which
        )
        log(
            f"[compare] arithmetic models at {models.teacher_dir.parent} "
            f"(held-out exact match when built: {models.scores})"
        )
        return ModelDirs(
            str(models.teacher_dir), str(models.student_dir), str(models.cross_student_dir)
        )
    if "teacher" not in spec:
        raise ConfigError("models.kind=paths needs a 'teacher' folder")
    return ModelDirs(
        _resolve_path(spec["teacher"]),
        _resolve_path(spec.get("student")),
        _resolve_path(spec.get("cross_student")),
    )


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
    )


def run_job(
    cfg: CompareConfig,
    dirs: ModelDirs,
    spec: MethodSpec,
    seed: int,
    teacher_texts: list[str],
    threads: int = 1,
    steps: int | None = None,
) -> JobResult:
    """Train ``spec`` from the initial student with ``seed`` for ``steps`` optimizer steps (None:
    ``cfg.train.steps``) and evaluate it; never raises."""
    torch.set_num_threads(threads)
    if steps is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    try:
        task = make_task(**cfg.task)
        student_dir = dirs.student if spec.student == "same" else dirs.cross_student
        if student_dir is None:
            raise ConfigError(
                f"method {spec.name!r} needs models.{spec.student}_student "
                "(student / cross_student) in the config"
            )
        student, stok, budget, losses = _train(cfg, dirs, spec, seed, student_dir, task)
        teacher, ttok = _load(dirs.teacher, trainable=False)
        ev = evaluate_model(
            student, stok, task, max_new_tokens(cfg), (teacher, ttok), teacher_texts, seed
        )
        n_s, n_t = num_params(student), num_params(teacher)
        return JobResult(
            method=spec.name,
            seed=seed,
            status="ok",
            score=ev.score,
            kl_per_char=ev.kl_per_char,
            agreement=ev.agreement,
            latency_s=ev.latency_s,
            tokens_per_s=ev.tokens_per_s,
            budget=asdict(budget),
            flops=budget.flops(n_s, n_t),
            params=n_s,
            disk_bytes=size_on_disk(student_dir),
            losses=losses,
            samples=ev.texts[:5],
            steps=0 if spec.objective == "none" else cfg.train.steps,
        )
    except Exception as exc:  # a failing method is a row of the report, not a crash
        tail = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return JobResult(
            method=spec.name,
            seed=seed,
            status="failed",
            error=f"{type(exc).__name__}: {exc}"[:300] or tail,
        )


def _train(
    cfg: CompareConfig, dirs: ModelDirs, spec: MethodSpec, seed: int, student_dir: str, task: Task
) -> tuple[Any, Any, ComputeBudget, list[float]]:
    """``(trained student, its tokenizer, budget, losses)``: the untouched student as is, TRL's
    ``SFTTrainer`` for ``trl_sft``, else a run of ``onpolicy.trainer.train`` (its checkpoints
    removed after; the trained student is in ``<output_dir>/runs/<method>-seed<seed>/final``)."""
    if spec.objective == "none":
        student, stok = _load(student_dir, trainable=False)
        return student, stok, ComputeBudget(), []
    if spec.objective == "trl_sft":
        from onpolicy.compare.trl_sft import train_trl_sft

        student, stok = _load(student_dir, trainable=True)
        teacher, ttok = _load(dirs.teacher, trainable=False)
        unknown = set(spec.params) - {"shuffle", "text"}
        if unknown:
            raise ConfigError(f"trl_sft takes the params shuffle, text; got {sorted(unknown)}")
        budget, losses = train_trl_sft(
            student, stok, teacher, ttok, task.train_prompts, cfg.train, seed, **spec.params
        )
        return student, stok, budget, losses
    from onpolicy.trainer import train

    run_dir = Path(cfg.output_dir) / "runs" / f"{spec.name}-seed{seed}"
    config = trainer_config(spec, cfg.train, seed, student_dir, dirs.teacher, run_dir)
    result = train(config, train_prompts=task.train_prompts)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the final student is kept
    student, stok = _load(str(result.final_dir), trainable=False)
    return student, stok, result.budget, [float(x) for x in result.losses]


def run_compare(
    cfg: CompareConfig, log: Callable[[str], None] = print, progress: bool = True
) -> tuple[JobResult, list[JobResult], ModelDirs, float, Plan]:
    """Every (method, seed) job plus the teacher's row, each job trained for the steps its budget
    plan gives it (``compare.budget``); returns (teacher, jobs, dirs, seconds, plan)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    # tiny models gain nothing from more threads, and oversubscribed cores slow torch down 10x
    threads = int(os.environ.get("ONPOLICY_THREADS", "1"))
    torch.set_num_threads(threads)
    dirs = resolve_models(cfg, log)
    task = make_task(**cfg.task)
    teacher = evaluate_teacher(cfg, dirs, task)
    log(f"[compare] teacher {cfg.task['name']} score: {teacher.score}")
    plan = plan_runs(cfg, dirs, task, teacher.params or 0)
    if cfg.budget.match == "flops":
        log(f"[compare] equal FLOPs: steps per (method, seed) {_steps_line(plan)}")
    jobs = [(spec, seed) for seed in cfg.seeds for spec in cfg.methods]
    workers = min(cfg.workers, len(jobs))
    results: list[JobResult] = []
    bar = tqdm(total=len(jobs), desc="compare", disable=not progress, unit="run")
    if workers == 1:
        for spec, seed in jobs:
            bar.set_postfix_str(f"{spec.name} seed {seed}")
            steps = plan.steps[(spec.name, seed)]
            results.append(run_job(cfg, dirs, spec, seed, teacher.samples, threads, steps))
            bar.update()
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [
                pool.submit(
                    run_job,
                    cfg,
                    dirs,
                    s,
                    seed,
                    teacher.samples,
                    threads,
                    plan.steps[(s.name, seed)],
                )
                for s, seed in jobs
            ]
            for fut in as_completed(futures):
                res = fut.result()
                bar.set_postfix_str(f"{res.method} seed {res.seed}: {res.status}")
                results.append(res)
                bar.update()
    bar.close()
    order = {(s.name, seed): i for i, (s, seed) in enumerate(jobs)}
    results.sort(key=lambda r: order[(r.method, r.seed)])
    return teacher, results, dirs, time.perf_counter() - start, plan


def _steps_line(plan: Plan) -> str:
    return ", ".join(f"{m}/{seed}: {n}" for (m, seed), n in plan.steps.items())


def output_dir(cfg: CompareConfig) -> Path:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out

"""One trainer run of the harness and what it spent: ``train_run`` trains a method through
``onpolicy.trainer.train`` (the one training loop; its ``eval.every`` evaluations are the learning
curve) and accounts its compute (``curves.account_run``). The warm-up (``warm_up``) and the
learning-rate trials (``lr_trial``) are such runs; ``split_prompts`` carves the validation split
they choose on out of the training prompts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onpolicy.compare.curves import RunAccount, account_run
from onpolicy.compare.methods import MethodSpec, RunOptions, TrainSettings, trainer_config
from onpolicy.types import Prompt


@dataclass(frozen=True)
class Split:
    """The task's training prompts less the validation split, and that split (empty when no
    choice needs one). The reported held-out split is the task's ``eval_prompts``, never these."""

    train: tuple[Prompt, ...]
    validation: tuple[Prompt, ...]


def needs_validation(cfg: Any) -> bool:
    """A learning-rate grid or a warm-up (its curve, its plateau) needs a validation split."""
    return cfg.lr_search is not None or cfg.warm_start is not None


def split_prompts(cfg: Any, task: Any) -> Split:
    """The last ``validation.size`` training prompts (default: a tenth, at most 200, when a choice
    needs them) are the validation split; no run trains on them."""
    prompts = tuple(task.train_prompts)
    size = cfg.validation_size
    if size is None:
        size = min(200, len(prompts) // 10) if needs_validation(cfg) else 0
    if size and size >= len(prompts):
        from onpolicy.errors import ConfigError

        raise ConfigError(
            f"validation.size={size} leaves no training prompts (the task has {len(prompts)})"
        )
    if not size:
        return Split(prompts, ())
    return Split(prompts[:-size], prompts[-size:])


def consumed(prompts: Sequence[Prompt], steps: int, batch_size: int, seed: int) -> list[Prompt]:
    """The prompts a run of ``steps`` x ``batch_size`` rows reads from the trainer's stream
    (``PromptStream(prompts, seed)``): all of them when it reads an epoch or more. A run given only
    these trains on the same prompts (in another order) and draws fixed teacher samples for them
    alone, not for every training prompt."""
    from onpolicy.data import PromptStream

    rows = steps * batch_size
    if rows >= len(prompts):
        return list(prompts)
    return PromptStream(prompts, seed).take(rows)


def student_of(dirs: Any, spec: MethodSpec) -> str | None:
    return dirs.student if spec.student == "same" else dirs.cross_student


@dataclass
class RunOutput:
    """A finished run: the saved student, its losses, the trainer's final evaluation and the
    compute account (curve + FLOPs in both accountings)."""

    final_dir: str
    losses: list[float]
    eval_after: dict[str, float]
    account: RunAccount
    budget: dict[str, float]


def train_run(
    cfg: Any,
    dirs: Any,
    spec: MethodSpec,
    seed: int,
    settings: TrainSettings,
    run_dir: Path,
    options: RunOptions,
    prompts: Sequence[Prompt],
    eval_prompts: Sequence[Prompt] = (),
    score_fn: Any = None,
) -> RunOutput:
    """Train ``spec`` through the trainer (evaluating on ``eval_prompts`` as ``options`` says)."""
    from dataclasses import asdict

    from onpolicy.compare.evaluate import num_params
    from onpolicy.models import load_model
    from onpolicy.trainer import train
    from onpolicy.trainer.metrics_log import read_metrics
    from onpolicy.trainer.setup import build_objective

    student = student_of(dirs, spec)
    config = trainer_config(spec, settings, seed, student, dirs.teacher, run_dir, options)
    if options.sample_seed is None:  # a shared dataset (warm_start.shared) covers every prompt
        prompts = consumed(prompts, settings.steps, settings.batch_size, seed)
    result = train(
        config, train_prompts=prompts, eval_prompts=list(eval_prompts), score_fn=score_fn
    )
    objective = build_objective(config)
    sources = [objective.batch_source(k) for k in range(settings.steps)]
    sizes = (num_params(load_model(str(result.final_dir))), num_params(load_model(dirs.teacher)))
    account = account_run(
        read_metrics(run_dir),
        result.budget,
        sizes,
        sources,
        settings.batch_size,
        len(prompts) - result.skipped_prompts,
    )
    losses = [float(x) for x in result.losses]
    return RunOutput(
        str(result.final_dir), losses, result.eval_after, account, asdict(result.budget)
    )


def warm_up(cfg: Any, dirs: Any, seed: int, threads: int = 1) -> dict[str, Any]:
    """The warm-up of ``seed`` (trained once, then read from its cache folder): its validation
    curve, plateau and branch points (``warm.json``; see ``compare.warm``)."""
    import torch

    from onpolicy.compare import warm
    from onpolicy.tasks.base import make_task

    torch.set_num_threads(threads)
    task = make_task(**cfg.task)
    split = split_prompts(cfg, task)
    spec: warm.WarmSpec = cfg.warm_start
    folder = warm.cache_folder(cfg, dirs, seed, split.train)
    done = folder / "warm.json"
    if done.is_file():
        return {**json.loads(done.read_text()), "cached": True}
    shutil.rmtree(folder, ignore_errors=True)
    val = split.validation
    shared = cfg.warm_start.shared  # the warm-up's samples are then every run's dataset
    options = RunOptions(spec.every, len(val), None, spec.every, seed if shared else None)
    settings = warm.with_lr(cfg.train, spec)
    out = train_run(
        cfg, dirs, spec.method, warm.warm_seed(seed, shared), settings,
        folder / "run", options, split.train, val, task.score,
    )  # fmt: skip
    curve = out.account.curve
    branches = warm.branch_steps(spec, curve)
    paths = warm.keep_branches(folder / "run", folder, branches)
    record = {
        "seed": seed,
        "method": spec.method.name,
        "curve": [vars(p) for p in curve],
        "branches": warm.branch_record(branches, paths, curve),
        "flops": vars(out.account.flops),
        "validation_prompts": len(val),
    }
    done.write_text(json.dumps(record, indent=1))
    return {**record, "cached": False}


def lr_trial(
    cfg: Any, dirs: Any, spec: MethodSpec, start: Any, lr: float, threads: int = 1
) -> dict[str, Any]:
    """One learning rate of the grid: ``spec`` trained from ``start`` with the first seed for
    ``lr_search.steps``, scored on the validation split (never the held-out split)."""
    import dataclasses

    import torch

    from onpolicy.compare import reuse
    from onpolicy.tasks.base import make_task

    torch.set_num_threads(threads)
    task = make_task(**cfg.task)
    split = split_prompts(cfg, task)
    seed = cfg.seeds[0]
    steps = cfg.lr_search.steps or cfg.train.steps
    settings = dataclasses.replace(cfg.train, lr=lr, steps=steps)
    forward = cfg.lr_search.criterion == "forward_nll"  # the trial draws the pool itself
    extra = {"lr_criterion": "forward_nll"} if forward else None  # other keys unchanged
    key = reuse.run_key(cfg, dirs, spec, seed, settings, start.init_from, extra)
    stored = reuse.load(cfg, "lr", key)
    if stored is not None:
        return {**stored, "start": start.name}
    run_dir = Path(cfg.output_dir) / "lr_search" / start.name / f"{spec.name}-lr{lr:g}"
    options = RunOptions(
        0, len(split.validation), start.init_from, forward_nll=forward or cfg.eval_forward_nll
    )
    out = train_run(
        cfg, dirs, spec, seed, settings, run_dir, options, split.train, split.validation,
        task.score,
    )  # fmt: skip
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "final", ignore_errors=True)
    record = {
        "method": spec.name,
        "start": start.name,
        "lr": lr,
        "metrics": out.eval_after,
        "criterion": cfg.lr_search.criterion,
        "validation_prompts": [p.text for p in split.validation],
    }
    reuse.save(cfg, "lr", key, record)
    return record

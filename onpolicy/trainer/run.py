"""``train(config) -> TrainResult``: the Python entry point the CLI and the comparison harness call
(``evaluate_config``, evaluation without training: ``eval_entry``). No globals: everything a run
needs comes from its arguments."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onpolicy.config import Config
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer.evaluate import evaluate, task_metric
from onpolicy.trainer.loop import StepResult, final_dir, run_steps, warn_collapse
from onpolicy.trainer.run_folder import ResumePolicy, claim_output_dir, config_record
from onpolicy.trainer.step_metrics import ComputeBudget
from onpolicy.types import Prompt, Rollout, ScoreFn

if TYPE_CHECKING:  # annotations only
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from onpolicy.trainer.metrics_log import MetricsLog
    from onpolicy.trainer.setup import Components


@dataclass
class TrainResult:
    """What a finished run returns.

    Attributes:
        output_dir: the run folder (``metrics.jsonl``, ``checkpoints/``, ``final/``).
        final_dir: the saved student (adapters for LoRA), or None when ``train.save_final`` is off.
        merged_dir: the merged LoRA export (``lora.merge_on_export``), else None.
        steps: optimizer steps completed (including those of a resumed run).
        losses: the loss of each step run by this call (NaN for skipped steps).
        eval_before / eval_after: ``evaluate`` metrics before training (empty on resume) and after.
        nonfinite_steps: steps skipped for a NaN/inf loss or gradient.
        resumed_from: the step of the checkpoint the run resumed from, else None.
        skipped_prompts: training prompts dropped for being longer than the context.
        budget: the compute the whole run spent (student/teacher token positions, seconds), over
            all processes; a resumed run includes the steps before its checkpoint.
    """

    output_dir: Path
    final_dir: Path | None
    merged_dir: Path | None
    steps: int
    losses: list[float]
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    nonfinite_steps: int = 0
    resumed_from: int | None = None
    skipped_prompts: int = 0
    budget: ComputeBudget = field(default_factory=ComputeBudget)


def make_accelerator(config: Config) -> Accelerator:
    from accelerate import Accelerator

    from onpolicy.trainer.metrics_log import tracker_names
    from onpolicy.trainer.setup import mixed_precision
    from onpolicy.trainer.sharding import fix_cpu_deepspeed_ranks, no_accelerator_device

    accelerator = Accelerator(
        cpu=no_accelerator_device(),  # torchrun-started processes form a gloo group on CPU
        mixed_precision=mixed_precision(config.train.mixed_precision),
        log_with=tracker_names(config.logging) or None,
        project_dir=config.train.output_dir,
    )
    # before anything asks who the main process is (the run-folder lock does, first thing)
    fix_cpu_deepspeed_ranks(accelerator)
    return accelerator


def prepare_prompts(
    config: Config,
    tokenizer: Any,
    train_prompts: Sequence[Prompt] | None,
    eval_prompts: Sequence[Prompt] | None,
    base_dir: Path | None,
) -> tuple[list[Prompt], list[Prompt], int]:
    """``(train, eval, skipped)``: given prompts, or the config's dataset; long prompts filtered."""
    from onpolicy.chat import render_prompt
    from onpolicy.data import filter_by_length, load_prompts

    if train_prompts is None:
        loaded_train, loaded_eval = load_prompts(config.data, config.train.seed, base_dir)
        train_prompts = loaded_train
        eval_prompts = loaded_eval if eval_prompts is None else eval_prompts
    budget = config.student.max_length - config.rollout.max_new_tokens
    kept, skipped = filter_by_length(
        list(train_prompts), lambda p: render_prompt(tokenizer, p), budget, config.data.on_too_long
    )
    held_out = list(eval_prompts or [])[: config.eval.num_prompts]
    if held_out:
        held_out, _ = filter_by_length(held_out, lambda p: render_prompt(tokenizer, p), budget)
    return kept, held_out, skipped


def train(
    config: Config,
    *,
    train_prompts: Sequence[Prompt] | None = None,
    eval_prompts: Sequence[Prompt] | None = None,
    score_fn: ScoreFn | None = None,
    base_dir: Path | None = None,
    policy: ResumePolicy | None = None,
) -> TrainResult:
    """Train the student of ``config`` (validated first) and save it; resumes from the newest
    checkpoint in ``train.output_dir`` when ``train.resume`` and one exists, under the rules of
    ``run_folder`` (lock, finished runs, changed configs; ``policy``: ``--fresh`` and friends).

    ``train_prompts``/``eval_prompts`` replace the config's dataset (the comparison harness passes a
    task's prompts); ``score_fn(text, prompt)`` is the task metric reported as ``eval/score``
    (default: the config's ``eval.metric``), at every evaluation (``eval.every``, the end).
    """
    from onpolicy.config_checks import validate
    from onpolicy.models import check_run_models

    validate(config, base_dir)
    if train_prompts is None:  # read (and check) the dataset before any model loads
        from onpolicy.data import load_prompts

        train_prompts, loaded_eval = load_prompts(config.data, config.train.seed, base_dir)
        eval_prompts = loaded_eval if eval_prompts is None else eval_prompts
    if config.teachers:  # a row naming an unknown teacher: an error before any model loads
        from onpolicy.teacher.routing import route_rows

        weights = {name: t.weight for name, t in config.teachers.items()}
        route_rows([p.teacher for p in train_prompts], weights)
    check_run_models(config)
    if config.hidden.weight > 0:  # layer map and tokenizers checked before any weights load
        from onpolicy.hidden.build import hidden_plan

        hidden_plan(config)
    accelerator = make_accelerator(config)
    with contextlib.ExitStack() as held:
        latest = claim_output_dir(accelerator, config, policy or ResumePolicy(), held)
        return _train_claimed(
            config, accelerator, latest, train_prompts, eval_prompts, score_fn, base_dir
        )


def _train_claimed(
    config: Config,
    accelerator: Accelerator,
    latest: Path | None,
    train_prompts: Sequence[Prompt] | None,
    eval_prompts: Sequence[Prompt] | None,
    score_fn: ScoreFn | None,
    base_dir: Path | None,
) -> TrainResult:
    """``train`` once the output folder is held: the run itself."""
    from accelerate.utils import set_seed

    from alignment.cpu import retain_freed_memory
    from onpolicy.trainer.setup import build_components

    if accelerator.device.type == "cpu":  # the same large buffers every step: keep them mapped
        retain_freed_memory()
    set_seed(config.train.seed)
    c = build_components(config, accelerator)
    try:  # the engines the run started are shut down at the end and on an error
        return _train_built(
            config, accelerator, c, latest, train_prompts, eval_prompts, score_fn, base_dir
        )
    finally:
        c.close()


def _train_built(
    config: Config,
    accelerator: Accelerator,
    c: Components,
    latest: Path | None,
    train_prompts: Sequence[Prompt] | None,
    eval_prompts: Sequence[Prompt] | None,
    score_fn: ScoreFn | None,
    base_dir: Path | None,
) -> TrainResult:
    """``train`` once its components are built."""
    from onpolicy.data import PromptStream
    from onpolicy.trainer.metrics_log import MetricsLog

    prompts, held_out, skipped = prepare_prompts(
        config, c.tokenizer, train_prompts, eval_prompts, base_dir
    )
    if score_fn is None:
        score_fn = task_metric(config.eval.metric, held_out, base_dir)
    state, resumed_from = _resume(accelerator, latest)
    record = config_record(config)
    state.fingerprint, state.config = record["fingerprint"], record["config"]
    c, spent = _with_fixed_teacher_samples(c, config, accelerator, prompts)
    if resumed_from is None:  # a resumed run draws the same samples again: counted once
        state.budget = state.budget.add(spent)
    pool = None  # held-out teacher samples for eval.forward_nll (evaluation compute: not counted)
    if config.eval.forward_nll and accelerator.is_main_process:
        from onpolicy.trainer.forward_pool import draw_pool

        teacher = getattr(c.sources.teacher_backend, "model", None)
        pool = draw_pool(held_out, c.sampling, c.sources, teacher)
    stream = PromptStream(prompts, config.train.seed, position=state.data_position)
    session = _Session(
        config,
        accelerator,
        c,
        held_out,
        score_fn,
        MetricsLog(accelerator, config, start_step=state.step),
        pool=pool,
    )
    eval_before = session.run_eval(step=0) if resumed_from is None else {}
    session.open_bar(state.step)
    try:
        losses = run_steps(c, config, accelerator, stream, state, session.on_step)
    finally:
        session.bar.close()
    out_dir = Path(config.train.output_dir)
    ckpt.save_checkpoint(accelerator, out_dir, state, config.train.keep_checkpoints)
    eval_after = session.run_eval(step=state.step, final=True)
    saved, merged = _save_final(config, c, accelerator)
    session.log.close()
    return TrainResult(
        out_dir,
        saved,
        merged,
        state.step,
        losses,
        eval_before,
        eval_after,
        state.nonfinite_steps,
        resumed_from,
        skipped,
        state.budget,
    )


def _with_fixed_teacher_samples(
    c: Components, config: Config, accelerator: Accelerator, prompts: list[Prompt]
) -> tuple[Components, ComputeBudget]:
    """``c`` with its fixed teacher samples drawn (``teacher.samples=fixed`` and an objective
    that samples the teacher in some step), and the compute spent; else ``c`` unchanged."""
    import dataclasses

    from onpolicy.trainer.sources import draw_teacher_samples

    steps = range(config.train.steps)
    blocks = list(config.teachers.values()) or [config.teacher]  # they agree (validated)
    if blocks[0].samples != "fixed" or all(c.objective.batch_source(s) != "teacher" for s in steps):
        return c, ComputeBudget()
    gather = None
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object as gather
    import torch

    from onpolicy.trainer.sample_cache import ENV, cached_draw, draw_key
    from onpolicy.trainer.sources import DRAW_CHUNK, prompt_key

    rank, world = accelerator.process_index, accelerator.num_processes
    seed = config.train.seed if config.teacher.sample_seed is None else config.teacher.sample_seed
    args = (prompts, c.sampling, c.sources, seed, rank, world, gather)
    teacher = getattr(c.sources.teacher_backend, "model", None)  # a local model's weights
    if os.environ.get(ENV) and isinstance(teacher, torch.nn.Module):  # opt-in: one shared draw
        sampling = dataclasses.replace(c.sampling, seed=None)  # each chunk sets its own
        key = draw_key(
            teacher, [prompt_key(p) for p in prompts], sampling=repr(sampling),
            seed=seed, rank=rank, world=world, chunk=DRAW_CHUNK,
            same_tokenizer=c.sources.same_tokenizer,
        )  # fmt: skip
        fixed, spent = cached_draw(key, lambda: draw_teacher_samples(*args))
    else:
        fixed, spent = draw_teacher_samples(*args)
    sources = dataclasses.replace(c.sources, fixed_teacher=fixed)
    return dataclasses.replace(c, sources=sources), spent


def _resume(accelerator: Accelerator, latest: Path | None) -> tuple[ckpt.TrainerState, int | None]:
    """Restore ``latest`` (chosen by ``claim_output_dir``), else a fresh state."""
    if latest is None:
        return ckpt.TrainerState(), None
    state = ckpt.load_checkpoint(accelerator, latest)
    return state, state.step


@dataclass
class _Session:
    """What the per-step callback needs: evaluation, logging, progress bar, checkpoints."""

    config: Config
    accelerator: Accelerator
    c: Components
    held_out: list[Prompt]
    score_fn: ScoreFn | None
    log: MetricsLog
    pool: Rollout | None = None  # eval.forward_nll's held-out teacher samples
    bar: tqdm | None = None
    warned: set[str] = field(default_factory=set)

    def open_bar(self, initial: int) -> None:
        from tqdm.auto import tqdm

        show = self.accelerator.is_main_process and self.config.logging.progress_bar
        self.bar = tqdm(
            total=self.config.train.steps,
            initial=initial,
            desc="onpolicy",
            dynamic_ncols=True,
            disable=not show,
        )

    def evaluate(self) -> dict[str, float]:
        """Main process only (the others wait): the unwrapped student, no collectives."""
        c, metrics = self.c, {}
        if self.accelerator.is_main_process and self.held_out:
            from onpolicy.scores.cached import live_teacher

            metrics = evaluate(
                c.raw_model,
                c.tokenizer,
                live_teacher(c.teacher),  # a cached teacher has no scores of new samples
                c.backend,
                self.held_out,
                c.sampling,
                self.config.eval.greedy,
                self.config.eval.batch_size,
                self.score_fn,
                self.pool,
            )
        self.accelerator.wait_for_everyone()
        return metrics

    def run_eval(self, step: int, final: bool = False) -> dict[str, float]:
        metrics = self.evaluate()
        if metrics:
            self.log.log({"final": 1, **metrics} if final else metrics, step=step)
        return metrics

    def on_step(self, st: ckpt.TrainerState, result: StepResult) -> None:
        cfg = self.config
        last = st.step == cfg.train.steps
        record = {
            "train/loss": result.loss,
            "train/num_tokens": result.num_tokens,
            "train/applied": float(result.applied),
            "train/nonfinite_steps": st.nonfinite_steps,
            **result.metrics,
        }
        if cfg.eval.every and st.step % cfg.eval.every == 0 and not last:
            record.update(self.evaluate())  # the final evaluation runs after the last step
        warn_collapse(record, self.accelerator, self.warned)
        if st.step % cfg.logging.every == 0 or last or any(k.startswith("eval/") for k in record):
            self.log.log(record, step=st.step)
        self.bar.update(1)
        tok_s = result.metrics.get("train/tokens_per_second", 0.0)
        self.bar.set_postfix(loss=f"{result.loss:.4f}", tok_s=f"{tok_s:.0f}")
        every = cfg.train.checkpoint_every
        if every and st.step % every == 0 and not last:
            out = Path(cfg.train.output_dir)
            ckpt.save_checkpoint(self.accelerator, out, st, cfg.train.keep_checkpoints)


def _save_final(
    config: Config, c: Components, accelerator: Accelerator
) -> tuple[Path | None, Path | None]:
    """The student in Hugging Face format (adapters for LoRA); merged export on request."""
    from onpolicy.models import export_merged, save_student
    from onpolicy.trainer.disk import disk_errors

    accelerator.wait_for_everyone()
    if not config.train.save_final:
        return None, None
    out = final_dir(config)
    merged = (
        out.parent / "final-merged" if config.lora.enabled and config.lora.merge_on_export else None
    )
    if accelerator.is_main_process:
        with disk_errors(out, f"the checkpoints in {out.parent / 'checkpoints'} are complete"):
            save_student(c.raw_model, c.tokenizer, out)
            if merged is not None:
                export_merged(c.raw_model, c.tokenizer, merged)
    accelerator.wait_for_everyone()
    return out, merged

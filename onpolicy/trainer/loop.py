"""The training loop: rollout -> score -> loss -> backward -> step -> sync -> log, on accelerate.

One optimizer step takes ``micro_batch_size * grad_accum * processes`` prompts from a shared,
resumable prompt stream; process ``r`` takes its contiguous slice and splits it into ``grad_accum``
micro-batches. All micro-batches are rolled out first (token ids only), so the global count ``N`` of
completion tokens (over micro-batches and processes) is known before any backward; then each
micro-batch is scored and its ``LossOutput.loss_sum`` (a SUM over counted tokens) is backpropagated
scaled by ``processes / N`` (DDP averages the processes' gradients). The result is the gradient of
``global loss sum / N``: the same for any split of the same prompts into micro-batches,
accumulation steps and processes. An objective that counts other tokens than the completion tokens
(``sum(num_tokens) != N``) gets its gradients renormalized by its own global count.

A step whose loss (on any process) or gradient norm is NaN/inf is skipped on every process: no
update, counted in ``train/nonfinite_steps`` (the whole run's count, saved in checkpoints). The
limit ``train.max_nonfinite`` applies per run *segment*: the count of skipped steps since this
process started or resumed (a resumed run starts at 0, so fixing the cause and resuming gets the
full allowance again). At the limit the run stops with a ``TrainingError`` that names the side:
the teacher when its scores held NaN/+inf values (``diag/teacher_nonfinite``; a -inf logit is a
legitimate mask), else the student. Checkpoints already written are untouched. Objectives let a
NaN/inf in what they train on (a logprob, an advantage) reach the loss, so it lands here too.

A diverged run (``diagnostics.divergence``: gradient norm 0 with a non-zero loss, collapsed
entropy, or an exploding loss, each for several steps) stops with a ``TrainingError`` naming the
last checkpoint written before the divergence began; nothing more is saved.

Every logged step metric is a global value: each process tallies additive quantities, the tallies
are gathered, and ratios are computed once from the sums (``step_metrics``); the step's compute
(student/teacher token positions, seconds) is returned in ``StepResult.budget``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from onpolicy.config import Config
from onpolicy.errors import TrainingError
from onpolicy.losses import token_normalized
from onpolicy.teacher.routing import score_and_loss
from onpolicy.teacher.types import CrossScores, TeacherScores
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer.diagnostics import (
    DIVERGENCE_STEPS,
    collapse_warnings,
    divergence,
    teacher_nonfinite,
)
from onpolicy.trainer.setup import Components
from onpolicy.trainer.sources import completions_for
from onpolicy.trainer.step_metrics import (
    ComputeBudget,
    StepTally,
    add_tallies,
    combine,
    gather_tallies,
    global_budget,
    positions,
    tally_alignment,
    tally_components,
    tally_rollout,
)
from onpolicy.types import Prompt, Rollout

if TYPE_CHECKING:  # annotations only
    from accelerate import Accelerator

    from onpolicy.data import PromptStream
    from onpolicy.objectives.base import BatchSource


@dataclass
class StepResult:
    """One optimizer step.

    Attributes:
        loss: the globally normalized loss (NaN when skipped for a NaN/inf loss or gradient).
        num_tokens: the global count of counted tokens.
        applied: whether the update was applied.
        nonfinite: the step was skipped for a NaN/inf loss or gradient.
        nonfinite_side: ``teacher`` when a skipped step's teacher scores held NaN/+inf values,
            ``student`` for another skipped step, else empty.
        metrics: global values over micro-batches and processes (``step_metrics.combine``).
        budget: the compute the step spent, over all processes.
    """

    loss: float
    num_tokens: int
    applied: bool
    nonfinite: bool
    metrics: dict[str, float] = field(default_factory=dict)
    budget: ComputeBudget = field(default_factory=ComputeBudget)
    nonfinite_side: str = ""


def micro_batches_for(
    step_prompts: list[Prompt], rank: int, world: int, micro_batch_size: int, grad_accum: int
) -> list[list[Prompt]]:
    """This process's ``grad_accum`` micro-batches out of one step's prompts (contiguous slices)."""
    per_process = micro_batch_size * grad_accum
    mine = step_prompts[rank * per_process : (rank + 1) * per_process]
    return [mine[i : i + micro_batch_size] for i in range(0, per_process, micro_batch_size)]


def train_step(
    c: Components,
    micro_batches: list[list[Prompt]],
    step: int,
    accelerator: Accelerator,
    grad_clip: float | None,
) -> StepResult:
    """One optimizer step over this process's micro-batches (see the module docstring)."""
    source = c.objective.batch_source(step)
    start = time.perf_counter()
    made = [make_rollout(c, source, prompts) for prompts in micro_batches]
    rollouts = [r for r, _ in made]
    spent = ComputeBudget()
    for _, b in made:
        spent = spent.add(b)
    rollout_seconds = time.perf_counter() - start
    tallies = [StepTally(budget=spent, times={"train/rollout_seconds": rollout_seconds})]
    local_tokens = sum(len(x) for r in rollouts for x in r.completion_ids_B)
    n_global = int(_reduce(accelerator, [local_tokens])[0])
    loss, n_counted, applied, nonfinite, extra = 0.0, 0, False, False, {}
    if n_global > 0:  # else no completion token anywhere: nothing to learn, every process skips
        local, trained = _backward_all(c, rollouts, n_global, accelerator)
        tallies.append(trained)
        loss_sum, counted, n_bad = _reduce(accelerator, local)
        n_counted = int(counted)
        applied, extra = _apply_update(c, accelerator, n_bad, counted, n_global, grad_clip)
        nonfinite = not applied
        loss = loss_sum / max(counted, 1.0) if applied else float("nan")
        if applied:  # per-process values (seconds), averaged over processes like the others
            synced = c.backend.sync_weights(c.raw_model, step + 1)
            tallies.append(StepTally(times={k: float(v) for k, v in synced.items()}))
    tallies.append(StepTally(budget=ComputeBudget(seconds=time.perf_counter() - start)))
    tallies = gather_tallies(accelerator, add_tallies(tallies))
    metrics = {**combine(tallies), **extra, "train/on_policy": float(source == "student")}
    side = "" if not nonfinite else "student"
    if nonfinite and metrics.get("diag/teacher_nonfinite", 0.0) > 0:
        side = "teacher"
    return StepResult(loss, n_counted, applied, nonfinite, metrics, global_budget(tallies), side)


def _apply_update(
    c: Components,
    accelerator: Accelerator,
    n_bad: float,
    n_counted: float,
    n_global: int,
    grad_clip: float | None,
) -> tuple[bool, dict[str, float]]:
    """Skip (zero the gradients) when any process had a NaN/inf loss (``n_bad`` global) or the
    gradient norm is NaN/inf; else clip and step. Returns ``(applied, metrics)``."""
    params = c.trainable_parameters()
    if n_bad > 0:
        c.optimizer.zero_grad(set_to_none=True)
        return False, {}
    if n_counted != n_global:  # the objective counts other tokens (e.g. teacher spans)
        _rescale_grads(params, n_global / max(n_counted, 1.0))
    grad_norm = _clip(accelerator, params, grad_clip)
    if not math.isfinite(grad_norm):
        c.optimizer.zero_grad(set_to_none=True)
        return False, {"train/grad_norm": grad_norm}
    c.optimizer.step()
    c.scheduler.step()
    c.optimizer.zero_grad(set_to_none=True)
    return True, {"train/grad_norm": grad_norm, "train/lr": c.scheduler.get_last_lr()[0]}


def _backward_all(
    c: Components, rollouts: list[Rollout], n_global: int, accelerator: Accelerator
) -> tuple[list[float], StepTally]:
    """Score, loss and backward per micro-batch, each loss SUM normalized by the global token count
    ``n_global`` (``token_normalized``; times the process count, since DDP averages the processes'
    gradients); returns this process's ``[loss_sum, counted tokens, non-finite losses]`` and its
    tally of the micro-batches."""
    local = [0.0, 0.0, 0.0]  # [loss_sum, counted tokens, non-finite losses]
    tally = StepTally()
    for i, rollout in enumerate(rollouts):
        last = i == len(rollouts) - 1
        # gradients are all-reduced once, on the last micro-batch
        sync = contextlib.nullcontext() if last else accelerator.no_sync(c.model)
        with sync:  # score (each teacher its rows: onpolicy.teacher.routing), loss, backward
            out, scored = score_and_loss(c.teacher, c.objective, c.model, rollout)
            loss = token_normalized(out.loss_sum, n_global, accelerator.num_processes)
            _backward(loss, accelerator, c.model, last)
        value = float(out.loss_sum.detach())
        finite = math.isfinite(value)
        local = [
            local[0] + (value if finite else 0.0),
            local[1] + out.num_tokens,
            local[2] + (not finite),
        ]
        tally.nonfinite_losses += not finite
        tally_rollout(tally, rollout)
        for part in scored:
            tally.teacher_nonfinite += teacher_nonfinite(part.scores)
            tally.budget.teacher_tokens += _teacher_positions(part.rollout, part.scores)
            if isinstance(part.scores, CrossScores):
                tally_alignment(tally, part.scores.cross.student_span_B)
        tally_components(tally, rollout.metrics, out.metrics, *(p.scores.metrics for p in scored))
    return local, tally


def _teacher_positions(rollout: Rollout, scores: TeacherScores) -> int:
    """Positions the teacher's scoring forward processed (its own tokens when they differ)."""
    return positions(scores.cross) if isinstance(scores, CrossScores) else positions(rollout)


def make_rollout(
    c: Components, source: BatchSource, prompts: list[Prompt]
) -> tuple[Rollout, ComputeBudget]:
    """The completions of one micro-batch from ``source``, in the student's tokens, and the
    sampling compute spent."""
    from onpolicy.chat import render_prompt

    ids = [render_prompt(c.tokenizer, p) for p in prompts]
    return completions_for(source, prompts, ids, c.sampling, c.sources)


def _reduce(accelerator: Accelerator, values: list[float]) -> list[float]:
    """Sum ``values`` over processes (float64, exact for token counts)."""
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").cpu().tolist()


def _rescale_grads(params: list[torch.Tensor], factor: float) -> None:
    """Gradients were normalized by completion tokens; renormalize by the objective's count."""
    for p in params:
        if p.grad is None:
            continue
        if not hasattr(p.grad, "mul_"):  # pragma: no cover - partitioned (DeepSpeed) gradients
            raise TrainingError(
                "this objective's token count differs from the completion tokens; "
                "that needs accessible gradients (use DDP or FSDP, not DeepSpeed)"
            )
        p.grad.mul_(factor)


def _backward(
    loss_sum: torch.Tensor, accelerator: Accelerator, model: torch.nn.Module, last: bool
) -> None:
    if loss_sum.requires_grad:
        accelerator.backward(loss_sum)
    elif accelerator.num_processes > 1 and last:
        # Empty micro-batch (no counted tokens, a constant loss) on the synchronizing micro-batch:
        # DDP's all-reduce needs every process to run backward, so contribute an explicit zero.
        zero = sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
        accelerator.backward(zero)


def _clip(accelerator: Accelerator, params: list[torch.Tensor], grad_clip: float | None) -> float:
    if grad_clip is not None:
        return float(accelerator.clip_grad_norm_(params, grad_clip))
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def run_steps(
    c: Components,
    config: Config,
    accelerator: Accelerator,
    stream: PromptStream,
    state: ckpt.TrainerState,
    on_step: Callable[[ckpt.TrainerState, StepResult], object],
) -> list[float]:
    """Steps ``state.step .. train.steps - 1``; ``on_step(state, result)`` logs, evaluates and
    checkpoints after each. Returns the per-step losses of this call (NaN for skipped steps).
    Stops with a ``TrainingError`` at ``train.max_nonfinite`` skipped steps in this segment or
    on divergence (see the module docstring)."""
    t = config.train
    losses: list[float] = []
    history: list[dict[str, float]] = []  # this segment's step records, for ``divergence``
    skipped = {"student": 0, "teacher": 0}  # this segment's skipped steps, by side
    per_step = t.micro_batch_size * t.grad_accum * accelerator.num_processes
    while state.step < t.steps:
        step_prompts = stream.take(per_step)  # every process reads the same stream
        mbs = micro_batches_for(
            step_prompts,
            accelerator.process_index,
            accelerator.num_processes,
            t.micro_batch_size,
            t.grad_accum,
        )
        result = train_step(c, mbs, state.step, accelerator, config.optim.grad_clip)
        state.step += 1
        state.data_position = stream.position
        state.budget = state.budget.add(result.budget)
        if result.nonfinite:
            state.nonfinite_steps += 1
            skipped[result.nonfinite_side] += 1
        losses.append(result.loss)
        history.append(
            {**result.metrics, "train/loss": result.loss, "train/applied": float(result.applied)}
        )
        reason = divergence(history)
        if reason is None:  # a diverged step is not checkpointed
            on_step(state, result)
        if sum(skipped.values()) >= t.max_nonfinite:
            raise TrainingError(nonfinite_message(skipped, t.max_nonfinite, config))
        if reason is not None:
            raise TrainingError(diverged_message(reason, state.step, config))
    return losses


def nonfinite_message(skipped: dict[str, int], limit: int, config: Config) -> str:
    """The one-line stop message at ``train.max_nonfinite`` skipped steps, naming the side."""
    n = sum(skipped.values())
    head = (
        f"{n} steps had a NaN/inf loss or gradient since this run (re)started "
        f"(train.max_nonfinite={limit})"
    )
    if skipped["teacher"]:
        cause = (
            f"in {skipped['teacher']} of them the TEACHER's scores held NaN/+inf values: check "
            f"the teacher {config.teacher.path!r} and teacher.dtype (float16 overflows)"
        )
    else:
        cause = "the student's loss or gradient was NaN/inf: lower optim.lr or check the data"
    return f"{head}; {cause}. Checkpoints are intact; rerun to resume with a fresh allowance."


def diverged_message(reason: str, step: int, config: Config) -> str:
    """The stop message of a diverged run: the reason and the last checkpoint before it."""
    began = step - DIVERGENCE_STEPS + 1
    good = [p for p in ckpt.list_checkpoints(config.train.output_dir) if _step_of(p) < began]
    where = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint precedes it"
    return (
        f"training diverged at step {step}: {reason}; {where} (later ones may hold the diverged "
        "student). Lower optim.lr or set optim.grad_clip, then resume or start over with --fresh"
    )


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[-1])


def warn_collapse(
    metrics: dict[str, float], accelerator: Accelerator, seen: set[str]
) -> dict[str, str]:
    """Print new collapse warnings on the main process (each metric once per run: ``seen`` holds
    those already printed); returns all current warnings."""
    found = collapse_warnings(metrics)
    if accelerator.is_main_process:
        for key, message in found.items():
            if key not in seen:
                seen.add(key)
                print(f"[onpolicy] warning: {message}", file=sys.stderr, flush=True)
    return found


def final_dir(config: Config) -> Path:
    return Path(config.train.output_dir) / "final"

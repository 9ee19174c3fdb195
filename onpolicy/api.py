"""The Python API for RL-style loops: drive the arrows yourself.

    prompt_ids = ...                                   # or let rollout() render them
    ro = rollout(backend, prompts, tokenizer, sampling)        # the student samples
    sc = score(teacher, ro)                                    # the teacher scores its samples
    out = loss(objective, student, ro, sc)                     # a LossOutput (a SUM over tokens)
    metrics = step(optimizer, out, model=student)              # normalize, backward, clip, step

``distillation_reward`` turns the teacher's scores into a per-sequence reward (the negative sampled
reverse KL) that a user can add to their own task reward; ``examples/custom_loop.py`` shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alignment.tokens.chat import turn_end_id
from onpolicy.chat import render_prompts
from onpolicy.losses import token_normalized
from onpolicy.objectives.base import LossOutput, Objective
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Prompt, Rollout, SamplingParams


def rollout(
    backend: Any, prompts: Sequence[Prompt], tokenizer: Any, sampling: SamplingParams
) -> Rollout:
    """Render ``prompts`` with the student's chat template and sample ``sampling.n`` completions
    each from ``backend`` (a registered rollout backend, e.g. ``make_backend("hf", ...)``)."""
    return backend.generate(render_prompts(tokenizer, prompts), sampling, prompts)


def make_teacher(
    student: Any, student_tokenizer: Any, objective: Objective | None = None, **block: Any
) -> Any:
    """A teacher from the keys of a config ``teacher:`` block, checked as the config is (one-line
    ``ConfigError``s before anything loads), e.g. ``make_teacher(student, tok, path="T",
    backend="vllm-server", server_url="http://127.0.0.1:8000", top_k=64)``. ``objective``: what
    it will score for (a top-k teacher asks for what it needs; default ``reverse_kl``'s logits).
    Several teachers: ``onpolicy.teacher.routing.TeacherSet`` and ``score_and_loss``."""
    from onpolicy.config import from_dict
    from onpolicy.objectives.base import make_objective, teacher_output
    from onpolicy.teacher.backends import build_teacher, check_backend

    t = from_dict({"teacher": block}).teacher
    objective = objective or make_objective("reverse_kl")
    output = teacher_output(objective)
    check_backend("teacher", t, output, objective)
    device = next(student.parameters()).device
    return build_teacher(t, student, student_tokenizer, device, output).scorer


def score(teacher: Any, ro: Rollout) -> TeacherScores:
    """The teacher's scores for a rollout (``LocalTeacher.score`` or any object with ``score``)."""
    return teacher.score(ro)


def loss(
    objective: Objective, student: torch.nn.Module, ro: Rollout, scores: TeacherScores | None = None
) -> LossOutput:
    """``objective``'s loss of ``student`` on ``ro``: a SUM over counted tokens + their count."""
    return objective.loss(student, ro, scores)


def step(
    optimizer: torch.optim.Optimizer,
    out: LossOutput | Sequence[LossOutput],
    model: torch.nn.Module | None = None,
    max_grad_norm: float | None = None,
    extra_loss: torch.Tensor | None = None,
) -> dict[str, float]:
    """One optimizer step on one or more micro-batch losses (single process).

    The loss is normalized globally: ``sum(loss_sum) / sum(num_tokens)`` over all the given
    micro-batches (so the gradient does not depend on how tokens were split). ``extra_loss`` (e.g. a
    user's own RL loss, already normalized) is added before ``backward``. Returns the loss, the
    token count and the gradient norm (when ``model`` and clipping are given).
    """
    outs = [out] if isinstance(out, LossOutput) else list(out)
    if not outs:
        raise ValueError("step() needs at least one LossOutput")
    num_tokens = sum(o.num_tokens for o in outs)
    # global normalization: every counted token weighs the same, whatever the micro-batch split
    loss_sum = sum((o.loss_sum for o in outs[1:]), start=outs[0].loss_sum)
    total = token_normalized(loss_sum, num_tokens)
    if extra_loss is not None:
        total = total + extra_loss
    total.backward()
    metrics = {"loss": float(total.detach()), "num_tokens": float(num_tokens)}
    if model is not None and max_grad_norm is not None:
        params = [p for p in model.parameters() if p.grad is not None]
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return metrics


def distillation_reward(ro: Rollout, scores: TeacherScores) -> list[float]:
    """Per sequence, ``sum_t log p_teacher(y_t) - log p_engine(y_t)`` over its completion tokens:
    a single-sample estimate of ``-KL(student || teacher)`` on that sequence (higher = closer to the
    teacher). Uses the rollout engine's logprobs, so it needs no student forward pass.
    Same-tokenizer scores only (``scores.token_logprobs_N``)."""
    if scores.token_logprobs_N is None:
        raise ValueError("distillation_reward needs same-tokenizer teacher scores (token logprobs)")
    teacher_B = torch.split(scores.token_logprobs_N.detach().cpu(), scores.num_tokens_B)
    return [
        float(t.sum()) - float(sum(s))
        for t, s in zip(teacher_B, ro.sampling_logprobs_B, strict=True)
    ]


def completion_rollout(
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    tokenizer: Any,
    end_with_turn_end: bool = True,
) -> Rollout:
    """A ``Rollout`` of fixed completions (a dataset's answers, or a teacher's sampled texts for a
    student with another tokenizer), for the off-policy baselines.

    Each completion text is tokenized with the student's tokenizer after the student's rendering of
    its prompt, and ends with the template's end-of-turn token (or EOS) when ``end_with_turn_end``,
    so the student also learns to stop. ``sampling_logprobs_B`` are NaN (no engine sampled them).
    """
    from onpolicy.trainer.sources import text_rollout

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    stop = turn_end_id(tokenizer)  # its end of turn, else its EOS
    n = len(prompts)
    return text_rollout(
        list(prompts),
        list(range(n)),
        render_prompts(tokenizer, prompts),
        list(completions),
        [end_with_turn_end] * n,
        tokenizer,
        stop,
        allow_empty=True,
    )


def make_objective(name: str, **params: Any) -> Objective:
    """The objective registered as ``name`` built with ``params`` (the config's
    ``objective.params``); unknown names list the known ones (one factory:
    ``onpolicy.objectives.base.make_objective``)."""
    from onpolicy.objectives.base import make_objective as build

    return build(name, params)

"""Held-out evaluation: how far the student is from the teacher, on the student's own completions.

The student completes each held-out prompt (greedy by default: the same completions for the same
weights, so before/after numbers compare; sampled when ``greedy=False``), then both models are
teacher-forced on those completions:

- ``eval/kl_per_token`` (same tokenizer): mean over completion positions of the full-distribution
  ``KL(student || teacher)`` at that position (exact per position, no sampling estimate);
- ``eval/teacher_nll_per_byte``: the teacher's negative log-likelihood of the completions per UTF-8
  byte (tokenizer-independent, so it compares across tokenizers);
- ``eval/logratio_per_byte``: ``(log p_student(y) - log p_teacher(y)) / bytes(y)`` summed over each
  completion; with sampled completions (``greedy=False``) its mean is an unbiased estimate of the
  per-byte sequence-level ``KL(student || teacher)`` -- the cross-tokenizer KL;
- ``eval/score`` when a task metric is given, plus the diagnostics of ``diagnostics.py``;
- with a ``pool`` (``eval.forward_nll``): ``eval/forward_nll_per_token`` / ``_per_byte``, the
  student's NLL of held-out *teacher* samples (``forward_pool.py``): coverage of the teacher's
  distribution, which the mode-seeking reverse KL can lose while the score holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from onpolicy.forward import forward_completions
from onpolicy.losses import token_logprobs
from onpolicy.teacher.types import CrossScores, DenseScores, HiddenScores
from onpolicy.trainer import diagnostics as diag
from onpolicy.trainer.forward_pool import forward_measure, pool_sums
from onpolicy.types import Prompt, Rollout, SamplingParams, ScoreFn

if TYPE_CHECKING:  # annotations only
    from transformers import PreTrainedTokenizerBase

    from onpolicy.rollout.base import RolloutBackend
    from onpolicy.trainer.setup import Teacher


def task_metric(metric: str, held_out: Sequence[Prompt], base_dir: Any = None) -> ScoreFn | None:
    """The ``eval.metric`` function (``onpolicy.metrics``), checked against the held-out prompts:
    a metric needs held-out prompts, and a built-in one a reference on each (one-line errors)."""
    from onpolicy.errors import ConfigError, DataError
    from onpolicy.metrics import needs_reference, resolve_metric

    fn = resolve_metric(metric, base_dir)
    if fn is None:
        return None
    if not held_out:
        raise ConfigError(
            f"eval.metric={metric!r} has no held-out prompts to score; set data.eval_size > 0 "
            "(or data.eval_path) and eval.num_prompts > 0"
        )
    missing = sum(p.reference is None for p in held_out)
    if needs_reference(metric) and missing:
        raise DataError(
            f"eval.metric={metric!r} compares with the gold `completion`, but {missing} of "
            f"{len(held_out)} held-out rows have none; add it to every eval row"
        )
    return fn


def evaluate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    teacher: Teacher | None,
    backend: RolloutBackend,
    prompts: Sequence[Prompt],
    sampling: SamplingParams,
    greedy: bool = True,
    batch_size: int = 8,
    score_fn: ScoreFn | None = None,
    pool: Rollout | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` (unwrapped student) against ``teacher`` (a ``LocalTeacher``, or None for
    the task metric only) on ``prompts``, and on the teacher samples of ``pool`` (a ``Rollout`` in
    the student's tokens, ``forward_pool.draw_pool``) when given; see the module docstring.

    Uses its own RNG stream (``fork_rng``): evaluating never changes the training run's samples.
    """
    from onpolicy.chat import render_prompt

    if not prompts:
        return {}
    sampling = replace(sampling, n=1, temperature=0.0 if greedy else sampling.temperature)
    # several teachers (``TeacherSet``): the first one's metrics as usual, every one's under
    # ``eval/<name>/`` (each on all the held-out completions)
    named = dict(getattr(teacher, "teachers", None) or {"": teacher})
    sums: dict[str, dict[str, float]] = {name: {} for name in named}
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for i in range(0, len(prompts), batch_size):
                chunk = list(prompts[i : i + batch_size])
                ids = [render_prompt(tokenizer, p) for p in chunk]
                rollout = backend.generate(ids, sampling, chunk)
                for j, (name, t) in enumerate(named.items()):
                    fn = score_fn if j == 0 else None
                    for k, v in _batch_sums(model, tokenizer, t, rollout, fn).items():
                        sums[name][k] = sums[name].get(k, 0.0) + v
            forward = pool_sums(model, tokenizer, pool, batch_size) if pool is not None else None
    finally:
        model.train(was_training)
    names = list(named)
    out = _means(sums[names[0]])
    for name in names if len(names) > 1 else ():
        student_only = _means({k: v for k, v in sums[name].items() if k in _STUDENT_SUMS})
        for k, v in _means(sums[name]).items():
            if k not in student_only and k != "eval/student_nll_per_token":
                out[f"eval/{name}/{k.removeprefix('eval/')}"] = v
    if forward is not None:
        out.update(forward_measure(*forward))
    return out


_STUDENT_SUMS = ("n_rows", "bytes", "completion_tokens", "truncated", "repetition", "score")
"""``_batch_sums`` keys that do not depend on the teacher."""


def _batch_sums(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    teacher: Teacher | None,
    rollout: Rollout,
    score_fn: ScoreFn | None,
) -> dict[str, float]:
    """Sums (not means) over one batch, with the counts they divide by (``n_*`` keys)."""
    out: dict[str, float] = {
        "n_rows": float(len(rollout)),
        "bytes": float(sum(len(t.encode("utf-8")) for t in rollout.texts_B)),
        "completion_tokens": float(sum(len(c) for c in rollout.completion_ids_B)),
        "truncated": float(sum(r == "length" for r in rollout.finish_reason_B)),
        "repetition": diag.repetition_rate(rollout.completion_ids_B) * len(rollout),
    }
    if score_fn is not None:
        out["score"] = float(
            sum(
                score_fn(t, rollout.prompts[j])
                for t, j in zip(rollout.texts_B, rollout.prompt_index_B, strict=True)
            )
        )
    if teacher is None or out["completion_tokens"] == 0:
        return out
    scores = teacher.score(rollout)
    batch = rollout.to_padded(tokenizer.pad_token_id)
    vocab = scores.vocab_size if scores.mode == "same" else len(tokenizer)
    fwd = forward_completions(model, batch, vocab)
    s_logits_N_V = fwd.logits_N_V.float()
    student_lp = token_logprobs(s_logits_N_V, fwd.targets_N).sum()
    if isinstance(scores, CrossScores):
        teacher_lp = scores.cross.token_logprobs_Nt.sum()
        if "teacher/coverage" in scores.metrics:  # share of student tokens inside aligned spans
            out["coverage"] = scores.metrics["teacher/coverage"] * len(rollout)
    elif isinstance(scores, DenseScores | HiddenScores):  # the full distribution: KL too
        t_logits_N_V = scores.dense_logits()  # the teacher's one head path (bias, scale, softcap)
        # a teacher set up for a chunked objective skips its token log-probs: from the logits
        teacher_lp = scores.token_logprobs(fwd.targets_N).sum()
        out["kl"] = diag.reverse_kl_per_token(s_logits_N_V, t_logits_N_V).sum().item()
        d = diag.distribution_diagnostics(s_logits_N_V, t_logits_N_V)
        n = float(s_logits_N_V.shape[0])
        for key, value in d.items():  # means over positions -> sums, so batches combine exactly
            out[f"pos:{key}"] = value * n
        out["n_positions"] = n
    else:  # a top-k or token-only (vLLM, cached) teacher: no full KL
        teacher_lp = scores.token_logprobs().sum()
    out["student_lp"] = student_lp.item()
    out["teacher_lp"] = float(teacher_lp)
    return out


def _means(s: dict[str, float]) -> dict[str, float]:
    rows, nbytes = max(s["n_rows"], 1.0), max(s["bytes"], 1.0)
    out = {
        "eval/completion_length": s["completion_tokens"] / rows,
        "eval/truncated_share": s["truncated"] / rows,
        "eval/repetition_rate": s["repetition"] / rows,
    }
    if "score" in s:
        out["eval/score"] = s["score"] / rows
    if "teacher_lp" in s:
        out["eval/teacher_nll_per_byte"] = -s["teacher_lp"] / nbytes
        out["eval/logratio_per_byte"] = (s["student_lp"] - s["teacher_lp"]) / nbytes
        out["eval/student_nll_per_token"] = -s["student_lp"] / max(s["completion_tokens"], 1.0)
    if "kl" in s:
        n = max(s["n_positions"], 1.0)
        out["eval/kl_per_token"] = s["kl"] / n
        out["eval/kl_per_byte"] = s["kl"] / nbytes  # per UTF-8 byte of the completions: KL/char
        for key, value in s.items():
            if key.startswith("pos:"):
                out["eval/" + key.removeprefix("pos:diag/")] = value / n
    if "coverage" in s:
        out["eval/alignment_coverage"] = s["coverage"] / rows
    return out

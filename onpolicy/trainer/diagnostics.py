"""Signals that warn before a distillation run collapses. Pure functions on tensors and lists.

- entropy of the student and the teacher per completion position (a student entropy falling toward 0
  while the teacher's stays up is mode collapse; both rising is a diverging student);
- top-k overlap between the two next-token distributions (agreement on the plausible tokens);
- share of completions truncated at ``max_new_tokens`` (rambling, lost end of turn) and the
  repetition rate of completions (degenerate loops), tallied over processes in ``step_metrics``;
- alignment coverage for cross-tokenizer runs, and NaN/inf counts (reported by the loop), the
  teacher's (``teacher_nonfinite``: NaN or +inf; a -inf logit is a legitimate mask) apart from the
  student's.

``collapse_warnings`` turns a metrics dict into one-line warnings; ``divergence`` decides from the
recent steps that a run has diverged and must stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from onpolicy.losses import reverse_kl
from onpolicy.teacher.types import (
    CrossScores,
    DenseScores,
    HiddenScores,
    TeacherScores,
    TopKScores,
)

# divergence: consecutive steps that show it, and the thresholds (heuristics; see ``divergence``)
DIVERGENCE_STEPS = 5
_ZERO_GRAD = 1e-12
_COLLAPSED_ENTROPY = 1e-3
_EXPLOSION = 100.0


def entropy(logits_N_V: torch.Tensor) -> torch.Tensor:
    """[N] entropy in nats of ``softmax(logits)`` per row, computed in float32.

    ``H = -sum_v p_v log p_v``; 0 for a one-hot distribution, ``log V`` for a uniform one.
    """
    logp_N_V = torch.log_softmax(logits_N_V.float(), dim=-1)
    # p * log p with 0 * -inf := 0 (a fully masked logit)
    plogp_N_V = torch.where(logp_N_V.isneginf(), 0.0, logp_N_V.exp() * logp_N_V)
    return -plogp_N_V.sum(dim=-1)


def topk_overlap(student_N_V: torch.Tensor, teacher_N_V: torch.Tensor, k: int) -> torch.Tensor:
    """[N] share of the teacher's top-``k`` tokens also in the student's top-``k``, in [0, 1].

    Both logits tensors share the vocabulary axis (same tokenizer). 1 = same top-k sets.
    """
    if student_N_V.shape != teacher_N_V.shape:
        raise ValueError(
            f"top-k overlap needs equal shapes, got {student_N_V.shape} and {teacher_N_V.shape}"
        )
    k = min(k, student_N_V.shape[-1])
    top_s_N_k = student_N_V.topk(k, dim=-1).indices
    top_t_N_k = teacher_N_V.topk(k, dim=-1).indices
    # [N, k, k] pairwise equality: each teacher top-k token found among the student's
    hits_N_k = (top_t_N_k.unsqueeze(-1) == top_s_N_k.unsqueeze(-2)).any(dim=-1)
    return hits_N_k.float().mean(dim=-1)


def reverse_kl_per_token(student_N_V: torch.Tensor, teacher_N_V: torch.Tensor) -> torch.Tensor:
    """[N] ``KL(student || teacher) = sum_v p_s (log p_s - log p_t)`` per position (float32,
    float64 stays): the loss's one definition, ``onpolicy.losses.reverse_kl`` unreduced (on the
    teacher's support where the teacher masks tokens with ``-inf``)."""
    return reverse_kl(student_N_V, teacher_N_V, reduction="none")


def repetition_rate(completion_ids_B: Sequence[Sequence[int]], n: int = 3) -> float:
    """Share of ``n``-grams that already occurred earlier in their completion, over all completions.

    0 for text without repeated n-grams; approaches 1 for a loop such as ``a b a b a b ...``.
    Completions shorter than ``n`` tokens contribute no n-grams (0 when there are none at all).
    """
    repeated = total = 0
    for ids in completion_ids_B:
        seen: set[tuple[int, ...]] = set()
        for i in range(len(ids) - n + 1):
            gram = tuple(ids[i : i + n])
            repeated += gram in seen
            seen.add(gram)
            total += 1
    return repeated / total if total else 0.0


def distribution_diagnostics(
    student_N_V: torch.Tensor, teacher_N_V: torch.Tensor, k: int = 5
) -> dict[str, float]:
    """Means over completion positions of entropies, top-k overlap and the reverse KL (same vocab).

    Empty inputs (``N == 0``) give an empty dict: there is nothing to average.
    """
    if student_N_V.shape[0] == 0:
        return {}
    with torch.no_grad():
        return {
            "diag/student_entropy": entropy(student_N_V).mean().item(),
            "diag/teacher_entropy": entropy(teacher_N_V).mean().item(),
            f"diag/top{k}_overlap": topk_overlap(student_N_V, teacher_N_V, k).mean().item(),
            "diag/nonfinite_logits": float((~torch.isfinite(student_N_V)).sum().item()),
        }


def collapse_warnings(metrics: dict[str, float]) -> dict[str, str]:
    """``{metric key: one-line warning}`` for values that usually precede a collapse (the
    thresholds are heuristics)."""
    out: dict[str, str] = {}

    def get(name: str) -> float | None:  # a training-step value, else the evaluation's
        return metrics.get(f"diag/{name}", metrics.get(f"eval/{name}"))

    s, t = get("student_entropy"), get("teacher_entropy")
    if s is not None and t is not None and t > 0.5 and s < 0.1 * t:
        out["diag/student_entropy"] = (
            f"student entropy {s:.3f} is under a tenth of the teacher's {t:.3f}: the student "
            "may be collapsing to one answer; lower optim.lr or raise rollout.temperature"
        )
    trunc = get("truncated_share")
    if trunc is not None and trunc > 0.5:
        out["diag/truncated_share"] = (
            f"{trunc:.0%} of completions hit rollout.max_new_tokens: the student stopped "
            "ending its turns; raise max_new_tokens or check the stop tokens"
        )
    length = get("completion_length")
    if length is not None and length < 1.5:
        out["diag/completion_length"] = (
            f"completions average {length:.1f} tokens: the student learned to stop at once; "
            "lower optim.lr or add warmup"
        )
    rep = get("repetition_rate")
    if rep is not None and rep > 0.5:
        out["diag/repetition_rate"] = f"repetition rate {rep:.2f}: completions loop; lower optim.lr"
    cov = metrics.get("diag/alignment_coverage", metrics.get("teacher/coverage"))
    if cov is not None and cov < 0.5:
        out["diag/alignment_coverage"] = (
            f"only {cov:.0%} of student tokens align to teacher spans: check the tokenizers"
        )
    for key in ("train/nonfinite_steps", "diag/nonfinite_logits"):
        if metrics.get(key, 0) > 0:
            out[key] = f"{key} = {metrics[key]:.0f}: NaN/inf values appeared; lower optim.lr"
    if metrics.get("diag/teacher_nonfinite", 0) > 0:
        out["diag/teacher_nonfinite"] = (
            f"the teacher returned {metrics['diag/teacher_nonfinite']:.0f} NaN/+inf values: check "
            "the teacher model and teacher.dtype (float16 overflows), not the learning rate"
        )
    return out


def teacher_nonfinite(scores: TeacherScores) -> int:
    """NaN and +inf values in a ``TeacherScores``, by variant: the logits (``DenseScores``), the
    final hidden states (``HiddenScores``; -inf counts there too), the sparse log-probs and tail
    (``TopKScores``), the teacher's own logits and log-probs (``CrossScores``), and the token
    log-probs of any variant. A -inf logit or log-prob is a masked token, not counted."""
    hidden = 0
    if isinstance(scores, DenseScores):
        tensors = [scores.logits_N_V]
    elif isinstance(scores, HiddenScores):
        tensors, hidden = [], int((~torch.isfinite(scores.hidden_N_D)).sum())
    elif isinstance(scores, TopKScores):
        tensors = [scores.topk_logprobs_N_K, scores.tail_logprob_N]
    elif isinstance(scores, CrossScores):
        tensors = [scores.cross.logits_Nt_V, scores.cross.token_logprobs_Nt]
    else:  # TokenScores: its token log-probs alone
        tensors = []
    if scores.token_logprobs_N is not None:
        tensors.append(scores.token_logprobs_N)
    return hidden + sum(int((t.isnan() | t.isposinf()).sum()) for t in tensors)


def divergence(history: Sequence[dict[str, float]], steps: int = DIVERGENCE_STEPS) -> str | None:
    """Why the run has diverged, from the step records of this run segment (oldest first; keys
    ``train/loss``, ``train/grad_norm``, ``train/applied``, ``diag/student_entropy``), or None.

    Diverged when, over each of the last ``steps`` applied steps: the gradient norm is 0 while the
    loss is not (a saturated, collapsed student); or the student's entropy is under 1e-3 nats
    (collapse to one token); or the loss exceeds 100x the median of the segment's first
    ``steps`` losses (an exploding loss).
    """
    applied = [r for r in history if r.get("train/applied", 1.0) and _finite(r.get("train/loss"))]
    if len(applied) < steps:
        return None
    last = applied[-steps:]
    if all(
        r.get("train/grad_norm", 1.0) <= _ZERO_GRAD and abs(r["train/loss"]) > 1e-6 for r in last
    ):
        return f"the gradient norm was 0 for {steps} steps while the loss was not"
    if all(r.get("diag/student_entropy", 1.0) < _COLLAPSED_ENTROPY for r in last):
        return f"the student's entropy stayed under {_COLLAPSED_ENTROPY} nats for {steps} steps"
    first = sorted(r["train/loss"] for r in applied[:steps])
    base = first[len(first) // 2]
    if (
        len(applied) >= 2 * steps
        and base > 0
        and all(r["train/loss"] > _EXPLOSION * base for r in last)
    ):
        return f"the loss exceeded {_EXPLOSION:g}x its early median ({base:.4g}) for {steps} steps"
    return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and x == x and abs(x) != float("inf")

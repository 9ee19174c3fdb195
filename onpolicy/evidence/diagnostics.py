"""Diagnostics of a distillation run, as pure functions on lists and tensors.

- ``score_by_bucket``: mean task score per output-length bucket (does a method's gap grow with
  the length of what is generated?); ``survival_by_step``: the share of outputs still right after
  ``k`` steps (where errors start and compound).
- ``completion_logits`` + ``reverse_kl_by_position``: the exact KL(student || teacher) over the
  vocabulary at each completion position of the student's own samples (where on-policy
  distillation spends its signal); ``entropy_by_position``: a model's entropy there (how many
  continuations the teacher leaves open, position by position).
- ``early_drop``, ``flops_to_reach``, ``plateau_index``, ``curve_area``: read a learning curve
  (score against cumulative FLOPs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onpolicy.losses import reverse_kl
from onpolicy.trainer.diagnostics import entropy


def score_by_bucket(keys: Sequence[int], scores: Sequence[float]) -> dict[int, tuple[float, int]]:
    """``{key: (mean score, count)}`` over paired ``keys`` (e.g. reference length) and scores,
    sorted by key."""
    sums: dict[int, list[float]] = {}
    for k, s in zip(keys, scores, strict=True):
        sums.setdefault(int(k), []).append(float(s))
    return {k: (sum(v) / len(v), len(v)) for k, v in sorted(sums.items())}


def survival_by_step(correct_prefix: Sequence[int], num_steps: int) -> list[float]:
    """Share of completions whose first ``k`` steps are all right, for ``k = 1..num_steps``
    (``correct_prefix``: each completion's count of leading right steps): where errors start
    and how they compound along the output."""
    if not correct_prefix:
        return [0.0] * num_steps
    n = len(correct_prefix)
    return [sum(c >= k for c in correct_prefix) / n for k in range(1, num_steps + 1)]


def completion_logits(
    logits_B_T_V: torch.Tensor, prompt_lens_B: Sequence[int], completion_lens_B: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict each completion token, left-aligned by completion position.

    ``logits_B_T_V`` come from a forward pass over right-padded ``prompt + completion`` rows (as
    ``PaddedBatch.from_ragged``); completion token ``j`` of row ``b`` sits at input position
    ``prompt_lens_B[b] + j`` and is predicted at ``prompt_lens_B[b] + j - 1``.

    Returns ``(logits_B_J_V, mask_B_J)`` with ``J = max(completion_lens_B)``; padded slots are 0 and
    masked out.
    """
    B, _, V = logits_B_T_V.shape
    J = max(completion_lens_B, default=0)
    out_B_J_V = logits_B_T_V.new_zeros((B, J, V))
    mask_B_J = torch.zeros((B, J), dtype=torch.bool, device=logits_B_T_V.device)
    for b, (p, c) in enumerate(zip(prompt_lens_B, completion_lens_B, strict=True)):
        if p < 1:
            raise ValueError(f"row {b} has an empty prompt; nothing predicts its first token")
        out_B_J_V[b, :c] = logits_B_T_V[b, p - 1 : p - 1 + c]
        mask_B_J[b, :c] = True
    return out_B_J_V, mask_B_J


def reverse_kl_by_position(
    student_logits_B_J_V: torch.Tensor, teacher_logits_B_J_V: torch.Tensor, mask_B_J: torch.Tensor
) -> tuple[list[float], list[int]]:
    """Per completion position ``j``: the mean over rows (where ``mask_B_J``) of
    ``KL(s || t) = sum_v s_v (log s_v - log t_v)`` with ``s = softmax(student)``,
    ``t = softmax(teacher)`` (float32; ``onpolicy.losses.reverse_kl``, the loss's one
    definition), and the number of rows counted.

    Returns ``(mean_kl_J, count_J)``; a position no row reaches has mean NaN and count 0.
    """
    kl_B_J = reverse_kl(student_logits_B_J_V, teacher_logits_B_J_V, mask=mask_B_J, reduction="none")
    return _mean_by_position(kl_B_J, mask_B_J)


def entropy_by_position(
    logits_B_J_V: torch.Tensor, mask_B_J: torch.Tensor
) -> tuple[list[float], list[int]]:
    """Per completion position ``j``: the mean over rows (where ``mask_B_J``) of the entropy
    ``-sum_v p_v log p_v`` of ``p = softmax(logits)`` (float32, nats;
    ``onpolicy.trainer.diagnostics.entropy``), and the rows counted.

    Returns ``(mean_entropy_J, count_J)``; a position no row reaches has mean NaN and count 0.
    """
    return _mean_by_position(entropy(logits_B_J_V), mask_B_J)


def _mean_by_position(
    values_B_J: torch.Tensor, mask_B_J: torch.Tensor
) -> tuple[list[float], list[int]]:
    """``(mean over rows where mask_B_J, rows counted)`` per position ``j``; NaN where none."""
    m = mask_B_J.float()
    count_J = m.sum(0)
    mean_J = (values_B_J * m).sum(0) / count_J.clamp(min=1)
    mean_J = torch.where(count_J > 0, mean_J, torch.full_like(mean_J, float("nan")))
    return [float(x) for x in mean_J], [int(x) for x in count_J]


def early_drop(scores: Sequence[float], window: int) -> float:
    """How far a curve falls below its starting score within its first ``window`` evaluations
    after the start: ``max(0, scores[0] - min(scores[1 : window + 1]))`` (0 for a curve of one
    point)."""
    if window < 1:
        raise ValueError(f"window={window}; use >= 1")
    after = scores[1 : window + 1]
    return max(0.0, float(scores[0]) - min(after)) if after else 0.0


def flops_to_reach(flops: Sequence[float], scores: Sequence[float], target: float) -> float | None:
    """The cumulative FLOPs at the first evaluation whose score is >= ``target`` (None: never)."""
    for f, s in zip(flops, scores, strict=True):
        if s >= target:
            return float(f)
    return None


def plateau_index(scores: Sequence[float], window: int, tol: float) -> int:
    """The first evaluation ``i`` after which the best score improves by less than ``tol`` over
    the next ``window`` evaluations (``max(scores[i+1 : i+1+window]) - max(scores[: i+1]) < tol``);
    the last index when the curve never flattens within its length."""
    if window < 1:
        raise ValueError(f"window={window}; use >= 1")
    for i in range(len(scores) - window):
        if max(scores[i + 1 : i + 1 + window]) - max(scores[: i + 1]) < tol:
            return i
    return len(scores) - 1


def curve_area(flops: Sequence[float], scores: Sequence[float]) -> float:
    """Mean score over the FLOPs range of a curve (trapezoid area / range; the single score for
    a one-point curve)."""
    if len(flops) != len(scores) or not scores:
        raise ValueError(f"need equal, non-empty flops and scores; got {len(flops)}, {len(scores)}")
    if len(scores) == 1 or flops[-1] == flops[0]:
        return float(scores[-1])
    area = sum(
        (flops[i + 1] - flops[i]) * (scores[i + 1] + scores[i]) / 2 for i in range(len(flops) - 1)
    )
    return area / (flops[-1] - flops[0])

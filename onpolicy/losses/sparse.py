"""Divergences against a sparse teacher: its top-k token ids and log-probabilities per position
(what a vLLM server returns) plus one tail bucket for the rest of the vocabulary.

Both distributions are coarsened to ``K + 1`` outcomes: the ``K`` support tokens and the tail.
- teacher: ``p_t(v)`` for ``v`` in the support (given), tail ``1 - sum_k p_t(v_k)`` (clamped to
  ``[min_tail_mass, 1]``; or given explicitly as ``teacher_tail_logprob``);
- student: ``p_s(v)`` for ``v`` in the support, tail = the student's mass off the support,
  ``logsumexp`` of its log-probs over the other tokens (exact, no ``1 - sum`` cancellation).
Any registered divergence is then computed over these ``K + 1`` outcomes. When the support covers
the vocabulary (``K == V``) there is no tail bucket and the result equals the dense divergence.
"""

from __future__ import annotations

import math

import torch

from onpolicy.errors import DataError
from onpolicy.losses.divergences import log_probs
from onpolicy.losses.kernels import get_kernel
from onpolicy.losses.reduce import (
    as_bool_mask,
    check_reduction,
    check_temperature,
    reduce_per_token,
)

Tensor = torch.Tensor


def _check(student_logits: Tensor, ids: Tensor, logprobs: Tensor) -> None:
    if ids.shape != logprobs.shape or ids.shape[:-1] != student_logits.shape[:-1]:
        raise DataError(
            f"teacher top-k ids {tuple(ids.shape)} and logprobs {tuple(logprobs.shape)} must "
            f"both be [..., T, K] with [..., T] = {tuple(student_logits.shape[:-1])}"
        )
    if ids.dtype not in (torch.int64, torch.int32):
        raise DataError(f"teacher top-k ids must be int64 token ids; got {ids.dtype}")
    if ids.shape[-1] > student_logits.shape[-1]:
        raise DataError(
            f"top-k of {ids.shape[-1]} exceeds the vocabulary {student_logits.shape[-1]}"
        )


def teacher_tail_logprob(teacher_topk_logprobs: Tensor, min_tail_mass: float = 1e-8) -> Tensor:
    """``log(1 - sum_k exp(topk_logprobs))`` [..., T], the mass clamped to ``[min_tail_mass, 1]``
    (rounding in the server's logprobs can make the sum exceed 1 slightly)."""
    lp = teacher_topk_logprobs.to(torch.float64)  # the 1 - sum cancellation wants float64
    mass = (-torch.expm1(torch.logsumexp(lp, dim=-1))).clamp(min=min_tail_mass, max=1.0)
    return mass.log().to(teacher_topk_logprobs.dtype)


def sparse_divergence(
    student_logits: Tensor,
    teacher_topk_ids: Tensor,
    teacher_topk_logprobs: Tensor,
    divergence: str = "generalized_jsd",
    coef: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    teacher_tail: Tensor | None = None,
    min_tail_mass: float = 1e-8,
) -> Tensor:
    """Divergence ``divergence`` (a ``kernels.DIVERGENCES`` name, ``coef`` = beta/alpha) between the
    student and a top-k teacher, over the support + one tail bucket.

    Args:
        student_logits: ``[..., T, V]``; divided by ``temperature`` (the teacher's log-probs
            are used as given: sample them from the server at the temperature you want).
        teacher_topk_ids: ``[..., T, K]`` int64 token ids, distinct within a position.
        teacher_topk_logprobs: ``[..., T, K]`` the teacher's log-probabilities of those ids.
        mask: ``[..., T]`` bool/0-1 positions that count. ``reduction``: ``mean``|``sum``|``none``.
        teacher_tail: optional ``[..., T]`` log tail mass; default ``teacher_tail_logprob``.
        min_tail_mass: floor of the default teacher tail mass (keeps reverse KL finite when the
            server's top-k mass rounds to 1); unused when ``K == V``.
    Returns:
        A scalar (``mean``/``sum``) or ``[..., T]`` (``none``), float32 (float64 if given).
    """
    kernel = get_kernel(divergence, coef)
    check_reduction(reduction)
    check_temperature(temperature)
    _check(student_logits, teacher_topk_ids, teacher_topk_logprobs)
    bool_mask = as_bool_mask(mask, student_logits.shape[:-1])
    ids = teacher_topk_ids.long()
    log_ps_V = log_probs(student_logits, temperature)  # [..., T, V]
    log_ps = log_ps_V.gather(-1, ids)  # [..., T, K]
    log_pt = teacher_topk_logprobs.to(log_ps.dtype)
    if ids.shape[-1] < student_logits.shape[-1]:  # add the tail bucket: [..., T, K + 1]
        off_support = log_ps_V.scatter(-1, ids, -math.inf)
        log_ps = torch.cat([log_ps, off_support.logsumexp(-1, keepdim=True)], dim=-1)
        if teacher_tail is None:
            teacher_tail = teacher_tail_logprob(teacher_topk_logprobs.detach(), min_tail_mass)
        log_pt = torch.cat([log_pt, teacher_tail.to(log_ps.dtype).unsqueeze(-1)], dim=-1)
    per_token = kernel.value(log_ps, log_pt, coef)  # [..., T]
    return reduce_per_token(per_token, bool_mask, reduction)

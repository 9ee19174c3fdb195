"""Dense divergences between student and teacher next-token distributions given as logits.

Shapes: ``student_logits`` and ``teacher_logits`` are ``[..., T, V]`` (any leading batch dims, the
same vocabulary ``V``); ``mask`` is ``[..., T]`` bool or 0/1 (positions that count). Each logit
tensor is upcast to float32 (float64 stays float64) and divided by ``temperature``
before ``log_softmax``.

``reduction``: ``mean`` (over counted positions; 0 with zero gradients when none count), ``sum``, or
``none`` (``[..., T]``, zero where masked). Gradients flow to both inputs if they require them; pass
a detached teacher for the usual distillation loss.

A teacher logit of ``-inf`` (a token the teacher forbids) is allowed: zero-probability terms
count 0.
"""

from __future__ import annotations

import torch

from onpolicy.errors import ConfigError, DataError
from onpolicy.losses.kernels import get_kernel
from onpolicy.losses.reduce import (
    as_bool_mask,
    check_reduction,
    check_temperature,
    compute_dtype,
    reduce_per_token,
)

Tensor = torch.Tensor


def log_probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``log_softmax(logits / temperature)`` over the last axis in float32 (float64 if given)."""
    z = logits.to(compute_dtype(logits))
    if temperature != 1.0:
        z = z / temperature
    return torch.log_softmax(z, dim=-1)


def divergence(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    coef: float = 0.0,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """The registered divergence ``name`` (see ``kernels.DIVERGENCES``) with coefficient ``coef``.

    Shapes as in the module docstring; returns a scalar (``mean``/``sum``) or ``[..., T]``
    (``none``).
    """
    kernel = get_kernel(name, coef)
    check_reduction(reduction)
    check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape or student_logits.dim() < 2:
        raise DataError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape [..., T, V]"
        )
    bool_mask = as_bool_mask(mask, student_logits.shape[:-1])
    log_ps = log_probs(student_logits, temperature)
    log_pt = log_probs(teacher_logits, temperature).to(log_ps.dtype)
    per_token = kernel.value(log_ps, log_pt, coef)  # [..., T]
    return reduce_per_token(per_token, bool_mask, reduction)


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Generalized Jensen-Shannon divergence, GKD's (and TRL's) convention.

    ``beta = 0``: ``KL(p_t || p_s)`` (forward KL); ``beta = 1``: ``KL(p_s || p_t)`` (reverse KL);
    otherwise ``beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)`` with
    ``m = beta * p_t + (1 - beta) * p_s``, ``log m`` computed as
    ``logaddexp(log p_t + log beta, log p_s + log(1 - beta))``.
    ``p_s = softmax(student_logits / temperature)``, likewise ``p_t``. Shapes: module docstring.
    """
    return divergence(
        "generalized_jsd", student_logits, teacher_logits, beta, temperature, mask, reduction
    )


def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``KL(p_t || p_s) = sum_v p_t(v) * (log p_t(v) - log p_s(v))`` (mode-covering)."""
    return divergence(
        "forward_kl", student_logits, teacher_logits, 0.0, temperature, mask, reduction
    )


def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``KL(p_s || p_t) = sum_v p_s(v) * (log p_s(v) - log p_t(v))`` (mode-seeking)."""
    return divergence(
        "reverse_kl", student_logits, teacher_logits, 0.0, temperature, mask, reduction
    )


def skew_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    alpha: float = 0.1,
    direction: str = "forward",
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """DistiLLM's skew KL with skew ``alpha`` in [0, 1].

    ``direction="forward"``: ``KL(p_t || alpha * p_t + (1 - alpha) * p_s)``;
    ``direction="reverse"``: ``KL(p_s || alpha * p_s + (1 - alpha) * p_t)``.
    ``alpha = 0`` gives the plain forward/reverse KL; ``alpha = 1`` gives 0.
    """
    if direction not in ("forward", "reverse"):
        raise ConfigError(f"skew_kl direction={direction!r}; use 'forward' or 'reverse'")
    name = "skew_forward_kl" if direction == "forward" else "skew_reverse_kl"
    return divergence(name, student_logits, teacher_logits, alpha, temperature, mask, reduction)


def total_variation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Total variation distance ``sum_v |p_s(v) - p_t(v)| / 2`` per position, in [0, 1]."""
    return divergence(
        "total_variation", student_logits, teacher_logits, 0.0, temperature, mask, reduction
    )

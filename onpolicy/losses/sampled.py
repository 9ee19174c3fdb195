"""The sampled-token estimator: per-token reverse-KL reward and its policy-gradient loss.

On the student's own samples ``x_t ~ p_s``, ``log p_t(x_t) - log p_s(x_t)`` is a one-sample estimate
of ``-KL(p_s || p_t)`` at that position (its expectation under ``p_s`` is exactly that), so it
serves as a per-token reward/advantage. The policy-gradient loss ``-ratio * advantage`` then has, in
expectation over the samples, the gradient of the reverse KL; only the student's log-probs carry a
gradient (advantages and behaviour log-probs are constants).

Shapes: all per-token tensors are ``[..., T]``; ``mask`` ``[..., T]`` bool/0-1; reductions as in
``reduce.reduce_per_token``.
"""

from __future__ import annotations

import math

import torch

from alignment.divergence import token_logprobs as _token_logprobs
from onpolicy.errors import ConfigError, DataError
from onpolicy.losses.reduce import (
    as_bool_mask,
    check_reduction,
    check_temperature,
    compute_dtype,
    reduce_per_token,
)

Tensor = torch.Tensor
CLIP_MODES = ("ppo", "tis")


def token_logprobs(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """``log softmax(logits / temperature)[..., token_ids]`` as ``[..., T]`` in float32 (float64 if
    given), from ``logits`` ``[..., T, V]`` and ``token_ids`` ``[..., T]`` (ids of masked positions
    must still be valid, e.g. 0). Uses ``logsumexp`` + ``gather``: no ``[..., T, V]``
    log-probs kept. The one sampled-token log-prob of both packages
    (``alignment.divergence.token_logprobs``), validated here."""
    check_temperature(temperature)
    if token_ids.shape != logits.shape[:-1]:
        raise DataError(
            f"token_ids {tuple(token_ids.shape)} must match the logits' positions "
            f"{tuple(logits.shape[:-1])}"
        )
    return _token_logprobs(logits, token_ids, temperature)


def token_logprobs_chunked(
    logits_N_V: Tensor, targets_N: Tensor, chunk_elems: int = 1 << 22
) -> Tensor:
    """float32 ``[N]`` ``token_logprobs`` of ``[N, V]`` logits, a chunk of rows at a time (no
    ``[N, V]`` float32 temporary when the logits are bf16/fp16). No gradient is meant to flow
    (teacher scoring)."""
    rows = max(1, chunk_elems // max(logits_N_V.shape[-1], 1))
    out = [
        _token_logprobs(z, t)
        for z, t in zip(logits_N_V.split(rows), targets_N.split(rows), strict=True)
    ]
    return torch.cat(out) if out else logits_N_V.new_zeros(0, dtype=torch.float32)


MASKED_LOGPROB = -100.0  # the teacher log-prob a sampled token it masks (-inf) is scored with


def sampled_token_reward(student_logprobs: Tensor, teacher_logprobs: Tensor) -> Tensor:
    """Per-token reward ``teacher_logprob - student_logprob`` of the sampled tokens, ``[..., T]``,
    detached (a constant for the policy gradient). Its mean under ``p_s`` is ``-KL(p_s || p_t)``.

    A sampled token the teacher masks (log-prob ``-inf``: the exact reward is ``-inf``) is scored
    with ``MASKED_LOGPROB`` (-100 nats): a large finite penalty instead of a NaN/inf step."""
    if student_logprobs.shape != teacher_logprobs.shape:
        raise DataError(
            f"student logprobs {tuple(student_logprobs.shape)} and teacher logprobs "
            f"{tuple(teacher_logprobs.shape)} must have the same shape [..., T]"
        )
    dtype = compute_dtype(student_logprobs)
    teacher = teacher_logprobs.to(dtype)
    teacher = teacher.masked_fill(teacher.isneginf(), MASKED_LOGPROB)  # NaN stays NaN
    return (teacher - student_logprobs.to(dtype)).detach()


def policy_gradient_loss(
    student_logprobs: Tensor,
    behaviour_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    clip_mode: str = "ppo",
    clip_eps: float = 0.2,
    tis_cap: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    """Importance-weighted policy-gradient loss on sampled tokens.

    ``ratio = exp(student_logprobs - behaviour_logprobs)`` corrects for the rollout engine's policy
    (its reported log-probs: older weights, or the same weights with different numerics, e.g. vLLM).

    - ``clip_mode="ppo"`` (PPO's clipped surrogate): per token
      ``-min(ratio * A, clip(ratio, 1 - clip_eps, 1 + clip_eps) * A)``; the gradient is zero where
      the clipped term is the smaller (the update has moved far enough).
    - ``clip_mode="tis"`` (truncated importance sampling): per token ``-min(ratio, tis_cap) * A``
      with the weight ``min(ratio, tis_cap)`` held constant, i.e. gradient
      ``-min(ratio, tis_cap) * A * grad(log p_s)`` (a REINFORCE step, bias bounded by the cap).

    At ``ratio == 1`` (on-policy, same numerics) both have gradient ``-A * grad(log p_s)``.

    Args:
        student_logprobs: ``[..., T]`` with grad (the learner's log-probs of the sampled tokens).
        behaviour_logprobs: ``[..., T]`` the rollout engine's log-probs (no grad used).
        advantages: ``[..., T]`` e.g. ``sampled_token_reward(...)`` (no grad used).
        mask: ``[..., T]`` counted positions. reduction: ``mean`` | ``sum`` | ``none``.
    """
    check_reduction(reduction)
    if clip_mode not in CLIP_MODES:
        raise ConfigError(f"clip_mode={clip_mode!r}; use one of {CLIP_MODES}")
    if not (0.0 < clip_eps < 1.0 and math.isfinite(tis_cap) and tis_cap > 0):
        raise ConfigError(f"need 0 < clip_eps < 1 and tis_cap > 0; got {clip_eps}, {tis_cap}")
    shape = student_logprobs.shape
    if behaviour_logprobs.shape != shape or advantages.shape != shape:
        raise DataError(
            f"student {tuple(shape)}, behaviour {tuple(behaviour_logprobs.shape)} and advantages "
            f"{tuple(advantages.shape)} must all be [..., T]"
        )
    bool_mask = as_bool_mask(mask, shape)
    dtype = compute_dtype(student_logprobs)
    logp = student_logprobs.to(dtype)
    adv = advantages.detach().to(dtype)
    log_ratio = logp - behaviour_logprobs.detach().to(dtype)
    if bool_mask is not None:  # padded positions may hold junk log-probs: keep exp() finite there
        log_ratio = torch.where(bool_mask, log_ratio, log_ratio.new_zeros(()))
    ratio = log_ratio.exp()
    if clip_mode == "ppo":
        clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
        per_token = -torch.minimum(ratio * adv, clipped * adv)
    else:
        weight = ratio.detach().clamp(max=tis_cap)
        per_token = -(weight * adv) * (logp - logp.detach()).exp()  # value -w*A, grad -w*A*dlogp
    return reduce_per_token(per_token, bool_mask, reduction)

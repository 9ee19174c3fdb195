"""Per-position divergence kernels over log-probability rows, and their registry.

Every kernel works on float log-probability rows ``log_ps`` (student) and ``log_pt`` (teacher) of
shape ``[..., V]`` (``V`` = vocabulary, or a sparse support + tail bucket) and returns one value per
row (shape ``[...]``). Two forms per divergence:

- ``value(log_ps, log_pt, coef)``: autograd-friendly and safe with ``-inf`` entries (a zero
  probability contributes 0, ``0 log 0 = 0``); used by the dense and the sparse losses.
- ``value_and_grad(log_ps, log_pt, coef)``: the value and its closed-form gradient with respect to
  the student's *logits* ``z`` (``log_ps = log_softmax(z)``), ``[..., V]``; assumes finite log-probs
  (a linear LM head gives them); used by the chunked loss, which never calls autograd on ``[N, V]``.
  It may overwrite both inputs (the gradient may live in one of their buffers): the chunked loss
  hands over scratch blocks; pass copies to keep them.

A teacher log-prob of ``-inf`` (a token the teacher masks: exactly zero probability) is supported by
both forms of every kernel: no NaN in values or gradients. Where the divergence would be infinite
(``KL(p_s || p_t)`` with ``p_t = 0 < p_s``), the reverse KL is taken on the teacher's support: the
student's distribution restricted to the tokens the teacher allows and renormalized
(``_on_support``; unchanged when the teacher masks nothing). The masked logits then get a zero
gradient.

The closed form: if ``a = dL/d(log p_s)`` elementwise, then ``dL/dz = a - p_s * sum(a)``.
``coef`` is GKD's ``beta`` for ``generalized_jsd`` and DistiLLM's skew ``alpha`` for the skew KLs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from onpolicy.errors import ConfigError

Tensor = torch.Tensor


def _xlogratio(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Elementwise ``p * (log p - log q)`` with ``0 * anything = 0`` where ``p == 0`` (no NaN in
    values or gradients when ``log_p`` or ``log_q`` is ``-inf`` there)."""
    p = log_p.exp()
    zero = p == 0
    return p * (log_p.masked_fill(zero, 0.0) - log_q.masked_fill(zero, 0.0))


def _on_support(log_ps: Tensor, log_pt: Tensor) -> Tensor:
    """The student's log-probs restricted to the teacher's support (``log_pt > -inf``) and
    renormalized there; ``log_ps`` itself when the teacher masks nothing."""
    masked = log_pt.isneginf()
    if not bool(masked.any()):
        return log_ps
    restricted = log_ps.masked_fill(masked, float("-inf"))
    return restricted - restricted.logsumexp(-1, keepdim=True)


def _finite_where_zero(log_p: Tensor) -> Tensor:
    """``log_p`` with ``-inf`` (zero probability) replaced by 0, for ``p * (log p - x)`` terms
    whose ``p`` is 0 there (avoids ``0 * -inf = NaN``)."""
    return log_p.masked_fill(log_p.isneginf(), 0.0)


def _log_mix(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """``log(weight_a * a + (1 - weight_a) * b)`` from log-probs, stably (0 < weight_a < 1)."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _zero(log_ps: Tensor) -> Tensor:
    """Zeros [...] connected to ``log_ps`` (a zero gradient, not a missing one)."""
    return log_ps.masked_fill(~torch.isfinite(log_ps), 0.0).sum(-1) * 0.0


# ----- values (autograd, -inf safe) ---------------------------------------------------------------


def _forward_kl(log_ps: Tensor, log_pt: Tensor, coef: float) -> Tensor:
    return _xlogratio(log_pt, log_ps).sum(-1)


def _reverse_kl(log_ps: Tensor, log_pt: Tensor, coef: float) -> Tensor:
    return _xlogratio(_on_support(log_ps, log_pt), log_pt).sum(-1)


def _jsd(log_ps: Tensor, log_pt: Tensor, beta: float) -> Tensor:
    if beta == 0.0:
        return _forward_kl(log_ps, log_pt, 0.0)
    if beta == 1.0:
        return _reverse_kl(log_ps, log_pt, 0.0)
    log_m = _log_mix(log_pt, log_ps, beta)  # m = beta * p_t + (1 - beta) * p_s
    kl_t = _xlogratio(log_pt, log_m).sum(-1)
    kl_s = _xlogratio(log_ps, log_m).sum(-1)
    return beta * kl_t + (1.0 - beta) * kl_s


def _skew_forward(log_ps: Tensor, log_pt: Tensor, alpha: float) -> Tensor:
    if alpha == 0.0:
        return _forward_kl(log_ps, log_pt, 0.0)
    if alpha == 1.0:  # m = the first argument: L = 0
        return _zero(log_ps)
    return _xlogratio(log_pt, _log_mix(log_pt, log_ps, alpha)).sum(-1)


def _skew_reverse(log_ps: Tensor, log_pt: Tensor, alpha: float) -> Tensor:
    if alpha == 0.0:
        return _reverse_kl(log_ps, log_pt, 0.0)
    if alpha == 1.0:  # m = the first argument: L = 0
        return _zero(log_ps)
    return _xlogratio(log_ps, _log_mix(log_ps, log_pt, alpha)).sum(-1)


def _tv(log_ps: Tensor, log_pt: Tensor, coef: float) -> Tensor:
    return 0.5 * (log_ps.exp() - log_pt.exp()).abs().sum(-1)


# ----- values and closed-form gradients wrt student logits (finite inputs) ------------------------


def _rowdot(a: Tensor, b: Tensor, piece: int = 512) -> Tensor:
    """Row-wise dot ``(a * b).sum(-1)`` of [..., V] tensors, without a [..., V] temporary: batched
    dots over pieces of ``piece`` entries, then a sum of the pieces (as accurate as ``sum``, which
    one long sequential dot is not)."""
    v = a.shape[-1]
    if v % piece:
        return (a * b).sum(-1)
    partial = torch.bmm(a.reshape(-1, 1, piece), b.reshape(-1, piece, 1))  # [rows * V / piece]
    return partial.reshape(*a.shape[:-1], v // piece).sum(-1)


def _from_a(p_s: Tensor, a: Tensor) -> Tensor:
    """``dL/dz = a - p_s * sum(a)`` for ``a = dL/d(log p_s)`` (in place on ``a``)."""
    return a.sub_(p_s * a.sum(-1, keepdim=True))


def _forward_kl_grad(log_ps: Tensor, log_pt: Tensor, coef: float) -> tuple[Tensor, Tensor]:
    p_t = log_pt.exp()
    value = _rowdot(p_t, _finite_where_zero(log_pt) - log_ps)
    return value, log_ps.exp().sub_(p_t)  # p_s - p_t


def _reverse_kl_grad(log_ps: Tensor, log_pt: Tensor, coef: float) -> tuple[Tensor, Tensor]:
    masked = log_pt.isneginf()
    if bool(masked.any()):  # on the teacher's support (module docstring); masked logits get 0
        log_ps = _on_support(log_ps, log_pt)
        d = (log_ps - log_pt).masked_fill_(masked, 0.0)
        p_s = log_ps.exp()
        value = _rowdot(p_s, d)
        return value, d.sub_(value.unsqueeze(-1)).mul_(p_s)
    # in the inputs' buffers (no [..., V] allocation): d in log_pt's, p_s in log_ps's
    d = log_pt.neg_().add_(log_ps)  # log p_s - log p_t
    p_s = log_ps.exp_()
    value = _rowdot(p_s, d)
    return value, d.sub_(value.unsqueeze(-1)).mul_(p_s)  # p_s * (d - KL)


def _jsd_grad(log_ps: Tensor, log_pt: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    if beta == 0.0:
        return _forward_kl_grad(log_ps, log_pt, 0.0)
    if beta == 1.0:
        return _reverse_kl_grad(log_ps, log_pt, 0.0)
    # log m = log(beta p_t + (1 - beta) p_s) = logaddexp(log p_s, log p_t + log(beta / (1 - beta)))
    #         + log(1 - beta), built in one buffer
    log_m = log_pt + (math.log(beta) - math.log1p(-beta))
    torch.logaddexp(log_ps, log_m, out=log_m).add_(math.log1p(-beta))
    kl_t = _rowdot(log_pt.exp(), _finite_where_zero(log_pt) - log_m)
    r_s = log_m.neg_().add_(log_ps)  # log(p_s / m), reusing the buffer
    p_s = log_ps.exp()
    kl_s = _rowdot(p_s, r_s)
    value = beta * kl_t + (1.0 - beta) * kl_s
    # dL/dp_s = (1 - beta) log(p_s / m)  =>  dL/dz = (1 - beta) p_s (log(p_s / m) - KL(p_s||m))
    return value, r_s.sub_(kl_s.unsqueeze(-1)).mul_(p_s).mul_(1.0 - beta)


def _skew_forward_grad(log_ps: Tensor, log_pt: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    if alpha == 0.0:
        return _forward_kl_grad(log_ps, log_pt, 0.0)
    if alpha == 1.0:
        return _zero(log_ps), torch.zeros_like(log_ps)
    log_m = _log_mix(log_pt, log_ps, alpha)
    value = _rowdot(log_pt.exp(), _finite_where_zero(log_pt) - log_m)
    # dL/dp_s = -(1 - alpha) * p_t / m  =>  a = -(1 - alpha) * p_s * p_t / m
    a = log_m.neg_().add_(log_ps).add_(log_pt).exp_().mul_(alpha - 1.0)
    return value, _from_a(log_ps.exp(), a)


def _skew_reverse_grad(log_ps: Tensor, log_pt: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    if alpha == 0.0:
        return _reverse_kl_grad(log_ps, log_pt, 0.0)
    if alpha == 1.0:
        return _zero(log_ps), torch.zeros_like(log_ps)
    p_s = log_ps.exp()
    r = log_ps - _log_mix(log_ps, log_pt, alpha)  # log(p_s / m)
    value = _rowdot(p_s, r)
    # dL/dp_s = log(p_s / m) + 1 - alpha * p_s / m (the constant 1 cancels in the softmax Jacobian)
    a = r.sub_(r.exp().mul_(alpha)).mul_(p_s)
    return value, _from_a(p_s, a)


def _tv_grad(log_ps: Tensor, log_pt: Tensor, coef: float) -> tuple[Tensor, Tensor]:
    p_s = log_ps.exp()
    diff = p_s - log_pt.exp()
    value = 0.5 * diff.abs().sum(-1)
    a = diff.sign_().mul_(p_s).mul_(0.5)  # dL/dp_s = sign(p_s - p_t) / 2
    return value, _from_a(p_s, a)


# ----- registry -----------------------------------------------------------------------------------

ValueFn = Callable[[Tensor, Tensor, float], Tensor]
ValueGradFn = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class DivergenceKernel:
    """One divergence ``L(p_s, p_t)``: its per-row value and value + closed-form logit gradient.

    Attributes:
        value: ``(log_ps [..., V], log_pt [..., V], coef) -> [...]``, autograd-friendly.
        value_and_grad: ``(log_ps, log_pt, coef) -> ([...], dL/dz [..., V])``, no autograd; may
            overwrite its inputs.
        coef_name: the name of ``coef`` (``beta`` or ``alpha``), or None when unused.
    """

    value: ValueFn
    value_and_grad: ValueGradFn
    coef_name: str | None = None


DIVERGENCES: dict[str, DivergenceKernel] = {
    "forward_kl": DivergenceKernel(_forward_kl, _forward_kl_grad),
    "reverse_kl": DivergenceKernel(_reverse_kl, _reverse_kl_grad),
    "generalized_jsd": DivergenceKernel(_jsd, _jsd_grad, "beta"),
    "skew_forward_kl": DivergenceKernel(_skew_forward, _skew_forward_grad, "alpha"),
    "skew_reverse_kl": DivergenceKernel(_skew_reverse, _skew_reverse_grad, "alpha"),
    "total_variation": DivergenceKernel(_tv, _tv_grad),
}
"""Registry of divergences by name: ``L(p_s, p_t)`` per position.

- ``forward_kl``: ``KL(p_t || p_s) = sum p_t log(p_t / p_s)``
- ``reverse_kl``: ``KL(p_s || p_t) = sum p_s log(p_s / p_t)``
- ``generalized_jsd`` (coef ``beta``, GKD/TRL convention): ``beta * KL(p_t || m) + (1 - beta) *
  KL(p_s || m)``, ``m = beta * p_t + (1 - beta) * p_s``; ``beta = 0`` is ``forward_kl``,
  ``beta = 1`` is ``reverse_kl``.
- ``skew_forward_kl`` (coef ``alpha``, DistiLLM): ``KL(p_t || alpha * p_t + (1 - alpha) * p_s)``
- ``skew_reverse_kl`` (coef ``alpha``, DistiLLM): ``KL(p_s || alpha * p_s + (1 - alpha) * p_t)``
- ``total_variation``: ``sum |p_s - p_t| / 2``
"""


def get_kernel(name: str, coef: float) -> DivergenceKernel:
    """The registered kernel ``name``; checks ``coef`` is in [0, 1]. Raises ``ConfigError``."""
    if name not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {name!r}; use one of {sorted(DIVERGENCES)}")
    kernel = DIVERGENCES[name]
    if kernel.coef_name is not None and not 0.0 <= coef <= 1.0:
        raise ConfigError(
            f"{name}: {kernel.coef_name}={coef} is outside [0, 1]; pick a value in it"
        )
    return kernel

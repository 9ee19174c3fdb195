"""The one home of the distribution math both packages use (``onpolicy`` imports it; ``alignment``
never imports ``onpolicy``, so shared math lives here, the lower layer).

- ``token_logprobs``: the log-probability of a given token under each logits row (the sampled-token
  signal): ``log softmax(logits / tau)[..., ids]`` as gather minus logsumexp, so no ``[..., V]``
  log-softmax is kept for backward. ``onpolicy.losses.token_logprobs`` validates and calls it;
  ``alignment.spans.chain_rule.token_logprobs`` is its shifted (token-aligned) form.
- the generalized Jensen-Shannon divergence in GKD's/TRL's convention: ``beta = 0``:
  ``KL(teacher || student)`` (forward), ``beta = 1``: ``KL(student || teacher)`` (reverse), else
  ``beta KL(t || m) + (1 - beta) KL(s || m)`` with ``m = beta t + (1 - beta) s``:
  ``gjsd_log`` for distributions given as log-probs (the next-byte loss), ``gjsd_measure`` for
  positive measures that need not sum to 1 (the GOLD-style matched terms).

The fused kernels that compute the same quantities together with a closed-form gradient
(``onpolicy.losses.kernels`` on dense rows, ``alignment.spans._gold_rows`` on span rows) are kept
where they are for speed; their tests check them against these functions or float64 autograd.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def token_logprobs(
    logits_V: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``log softmax(logits / temperature)[..., token_ids]``: ``[...]`` from ``logits`` ``[..., V]``
    and ``token_ids`` ``[...]``, in float32 (float64 if given). No checks (callers validate)."""
    z = logits_V.to(torch.promote_types(logits_V.dtype, torch.float32))
    if temperature != 1.0:
        z = z / temperature
    picked = z.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(z, dim=-1)


def gjsd_log(ls_E_C: torch.Tensor, lt_E_C: torch.Tensor, beta: float) -> torch.Tensor:
    """[...] generalized JSD between distributions over the last axis given as log-probs
    (``ls``: student, ``lt``: teacher; ``-inf``: zero mass), in the module's convention. Terms
    with zero mass count 0 (``0 log 0 = 0``), with finite
    gradients."""
    s_pos, t_pos = torch.isfinite(ls_E_C), torch.isfinite(lt_E_C)
    ls = torch.where(s_pos, ls_E_C, torch.zeros((), dtype=ls_E_C.dtype))
    lt = torch.where(t_pos, lt_E_C, torch.zeros((), dtype=lt_E_C.dtype))
    zero = torch.zeros((), dtype=ls.dtype)
    if beta == 0.0:
        return torch.where(t_pos, lt.exp() * (lt - ls), zero).sum(-1)
    if beta == 1.0:
        return torch.where(s_pos, ls.exp() * (ls - lt), zero).sum(-1)
    lm = torch.logaddexp(
        torch.where(t_pos, lt + float(np.log(beta)), -torch.inf),
        torch.where(s_pos, ls + float(np.log1p(-beta)), -torch.inf),
    )
    lm = torch.where(s_pos | t_pos, lm, zero)
    kl_t = torch.where(t_pos, lt.exp() * (lt - lm), zero).sum(-1)
    kl_s = torch.where(s_pos, ls.exp() * (ls - lm), zero).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s


def gjsd_measure(la: torch.Tensor, lb: torch.Tensor, beta: float) -> torch.Tensor:
    """[...] generalized JSD of positive measures ``exp(la)``, ``exp(lb)`` over the last axis
    (the module's convention; zero masses count 0, with finite gradients).

    Positive measures need not sum to 1 (restricted span distributions): each KL is the one for
    positive measures, ``sum p log(p / q) - p + q`` (>= 0, 0 iff equal, the plain KL for
    distributions; for ``0 < beta < 1`` the extra terms cancel)."""
    if 0.0 < beta < 1.0:
        # the ``- p + q`` terms cancel (sum m = beta sum b + (1 - beta) sum a) and m > 0 wherever
        # a or b is: few passes over [..., M]; a zero mass's log is floored so 0 * log 0 = 0
        floor = -torch.finfo(la.dtype).max
        a, b = la.exp(), lb.exp()
        m = beta * b + (1 - beta) * a
        lm = torch.log(m.clamp(min=torch.finfo(m.dtype).tiny))
        kl_b = (b * (lb.clamp(min=floor) - lm)).sum(-1)
        kl_a = (a * (la.clamp(min=floor) - lm)).sum(-1)
        return beta * kl_b + (1 - beta) * kl_a
    a_pos, b_pos = la > -math.inf, lb > -math.inf
    zero = torch.zeros((), dtype=la.dtype)
    la, lb = torch.where(a_pos, la, zero), torch.where(b_pos, lb, zero)
    a, b = torch.where(a_pos, la.exp(), zero), torch.where(b_pos, lb.exp(), zero)

    def kl(lp, p, p_pos, lq, q):  # sum p log(p / q) - p + q
        return (torch.where(p_pos, p * (lp - lq), zero) - p + q).sum(-1)

    if beta == 0.0:
        return kl(lb, b, b_pos, la, a)
    return kl(la, a, a_pos, lb, b)

"""The math both packages share (``alignment.divergence``) agrees with onpolicy's losses and with a
float64 reference from the definitions: one convention for the generalized JSD everywhere."""

from __future__ import annotations

import math

import pytest
import torch

from alignment.divergence import gjsd_log, gjsd_measure
from onpolicy.losses import generalized_jsd, token_logprobs, token_logprobs_chunked


def _reference_gjsd(log_s: torch.Tensor, log_t: torch.Tensor, beta: float) -> torch.Tensor:
    """float64 GKD/TRL generalized JSD from the definition (beta 0: KL(t||s), 1: KL(s||t))."""
    s, t = log_s.double().exp(), log_t.double().exp()

    def kl(p, q):
        return torch.where(p > 0, p * (p.log() - q.log()), torch.zeros((), dtype=p.dtype)).sum(-1)

    if beta == 0.0:
        return kl(t, s)
    if beta == 1.0:
        return kl(s, t)
    m = beta * t + (1 - beta) * s
    return beta * kl(t, m) + (1 - beta) * kl(s, m)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_gjsd_forms_agree_with_the_definition_and_the_dense_loss(beta):
    g = torch.Generator().manual_seed(0)
    s_logits, t_logits = (
        torch.randn(2, 5, 11, generator=g) * 3,
        torch.randn(2, 5, 11, generator=g) * 3,
    )
    log_s, log_t = torch.log_softmax(s_logits, -1), torch.log_softmax(t_logits, -1)
    want = _reference_gjsd(log_s, log_t, beta)
    dense = generalized_jsd(s_logits, t_logits, beta=beta, reduction="none")
    torch.testing.assert_close(dense.double(), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gjsd_log(log_s, log_t, beta).double(), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        gjsd_measure(log_s, log_t, beta).double(), want, atol=1e-6, rtol=1e-5
    )


def test_gjsd_zero_masses_count_zero_with_finite_gradients():
    log_s = torch.log(torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)).requires_grad_()
    log_t = torch.log(torch.tensor([[0.25, 0.25, 0.5]], dtype=torch.float64))
    for fn in (gjsd_log, gjsd_measure):
        for beta in (0.0, 0.5):
            value = fn(log_s, log_t, beta)
            (grad,) = torch.autograd.grad(value.sum(), log_s)
            assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    # beta = 1 (reverse KL) ignores the teacher mass where the student has none: log 2 exactly
    assert float(gjsd_log(log_s.detach(), log_t, 1.0)) == pytest.approx(math.log(2.0))


def test_token_logprobs_equals_float64_log_softmax_at_the_target_in_chunks():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(7, 13, generator=g) * 4).to(torch.bfloat16)
    targets = torch.randint(0, 13, (7,), generator=g)
    want = torch.log_softmax(logits.double(), -1).gather(1, targets[:, None])[:, 0]
    got = token_logprobs(logits, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    chunked = token_logprobs_chunked(logits, targets, chunk_elems=2 * 13)  # 2 rows a chunk
    torch.testing.assert_close(chunked, got)

"""Sparse (top-k + tail) teacher: exact when K covers the vocabulary, else bucketed reference."""

from __future__ import annotations

import math

import pytest
import torch
from losses_reference import CASES, random_mask, reduce64, ref_from_probs, softmax64

from onpolicy.errors import DataError
from onpolicy.losses import divergence, sparse_divergence, teacher_tail_logprob

B, T, V = 2, 5, 17


def _inputs(seed: int, k: int):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2).requires_grad_()
    t = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    log_pt = torch.log_softmax(t, -1)
    order = torch.argsort(torch.rand(B, T, V, generator=g), dim=-1)  # ids in arbitrary order
    ids = order[..., :k]
    return s, t, ids, log_pt.gather(-1, ids), random_mask((B, T), g)


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_full_support_equals_dense(name, coef):
    s, t, ids, lp, mask = _inputs(1, V)
    for reduction in ("mean", "none"):
        out = sparse_divergence(s, ids, lp, name, coef, 1.0, mask, reduction)
        dense = divergence(name, s, t, coef, 1.0, mask, reduction)
        torch.testing.assert_close(out, dense, rtol=1e-10, atol=1e-12)
        (g1,) = torch.autograd.grad(out.sum(), s)
        (g2,) = torch.autograd.grad(dense.sum(), s)
        torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


def _bucket_reference(name, coef, s, t, ids, temperature, mask, reduction):
    """Bucketed distributions built by hand: support probabilities, then 1 - their sum."""
    ps, pt = softmax64(s, temperature), softmax64(t)
    ps_k, pt_k = ps.gather(-1, ids), pt.gather(-1, ids)
    ps_b = torch.cat([ps_k, 1 - ps_k.sum(-1, keepdim=True)], -1)
    pt_b = torch.cat([pt_k, 1 - pt_k.sum(-1, keepdim=True)], -1)
    return reduce64(ref_from_probs(name, coef, ps_b, pt_b), mask, reduction)


@pytest.mark.parametrize(("name", "coef"), CASES)
@pytest.mark.parametrize("k", [1, 5])
def test_topk_plus_tail_matches_bucket_reference(name, coef, k):
    s, t, ids, lp, mask = _inputs(2 + k, k)
    for reduction, temperature in (("sum", 1.0), ("none", 0.8)):
        out = sparse_divergence(s, ids, lp, name, coef, temperature, mask, reduction)
        ref = _bucket_reference(name, coef, s, t, ids, temperature, mask, reduction)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
        (g1,) = torch.autograd.grad(out.sum(), s)
        (g2,) = torch.autograd.grad(ref.sum(), s)
        torch.testing.assert_close(g1, g2, rtol=1e-7, atol=1e-10)


def test_float32_and_all_masked():
    s, _, ids, lp, mask = _inputs(3, 4)
    s32 = s.detach().float().requires_grad_()
    out = sparse_divergence(s32, ids, lp.float(), "reverse_kl", mask=mask)
    assert out.dtype == torch.float32
    ref = sparse_divergence(s.detach(), ids, lp, "reverse_kl", mask=mask)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    empty = sparse_divergence(s32, ids, lp.float(), mask=torch.zeros(B, T, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()
    assert (s32.grad == 0).all()


def test_tail_mass_rounding_is_floored():
    lp = torch.log(torch.tensor([[0.6, 0.4 + 1e-6]]))  # sums to slightly more than 1
    tail = teacher_tail_logprob(lp, min_tail_mass=1e-8)
    assert tail.item() == pytest.approx(math.log(1e-8), rel=1e-6)
    s = torch.randn(1, 5, requires_grad=True)
    out = sparse_divergence(s, torch.tensor([[0, 1]]), lp, "reverse_kl")
    assert math.isfinite(out.item())
    assert teacher_tail_logprob(torch.log(torch.tensor([[0.5, 0.25]]))).item() == pytest.approx(
        math.log(0.25)
    )


def test_bad_shapes_raise():
    s, _, ids, lp, _ = _inputs(4, 3)
    with pytest.raises(DataError, match="top-k ids"):
        sparse_divergence(s, ids[..., :2], lp)
    with pytest.raises(DataError, match="int64"):
        sparse_divergence(s, ids.float(), lp)

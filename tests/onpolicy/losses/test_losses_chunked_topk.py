"""Chunked top-k divergence (student hidden + LM head vs a top-k teacher) == float64 bucket
reference built by hand == the sparse loss on full logits; K = V equals the dense loss."""

from __future__ import annotations

import pytest
import torch
from losses_reference import CASES, random_mask, reduce64, ref_from_probs, softmax64

from onpolicy.errors import DataError
from onpolicy.losses import (
    LMHead,
    chunked_divergence,
    chunked_topk_divergence,
    divergence,
    sparse_divergence,
)

B, T, V, H = 3, 6, 29, 8


def _student(seed: int, dtype=torch.float64, bias=True, softcap=None):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(B, T, H, generator=g, dtype=dtype).requires_grad_()
    ws = (torch.randn(V, H, generator=g, dtype=dtype) * 0.7).requires_grad_()
    bs = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    return hs, LMHead(ws, bs, logit_scale=1.3, softcap=softcap), random_mask((B, T), g)


def _teacher(seed: int, k: int):
    """Teacher logits [B, T, V] and its top-k ids (in an arbitrary order) and log-probs."""
    g = torch.Generator().manual_seed(seed)
    zt = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    ids = torch.argsort(torch.rand(B, T, V, generator=g), dim=-1)[..., :k]
    return zt, ids, torch.log_softmax(zt, -1).gather(-1, ids)


def _logits(h, head: LMHead):
    y = h @ head.weight.t()
    if head.bias is not None:
        y = y + head.bias
    y = y * head.logit_scale
    return y if head.softcap is None else head.softcap * torch.tanh(y / head.softcap)


def _params(hs, head):
    return [hs, head.weight] + ([head.bias] if head.bias is not None else [])


def _grads(out, hs, head):
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
    return torch.autograd.grad((out * w).sum(), _params(hs, head), retain_graph=True)


def _bucket_reference(name, coef, zs, zt, ids, temperature, mask, reduction):
    """Both distributions bucketed by hand from probabilities: the support, then 1 - its sum."""
    ps, pt = softmax64(zs, temperature), softmax64(zt)
    ps_k, pt_k = ps.gather(-1, ids), pt.gather(-1, ids)
    ps_b = torch.cat([ps_k, 1 - ps_k.sum(-1, keepdim=True)], -1)
    pt_b = torch.cat([pt_k, 1 - pt_k.sum(-1, keepdim=True)], -1)
    return reduce64(ref_from_probs(name, coef, ps_b, pt_b), mask, reduction)


SETTINGS = (("mean", 1.0, 4), ("sum", 0.6, 5), ("none", 1.7, 3))


@pytest.mark.parametrize(("name", "coef"), CASES)
@pytest.mark.parametrize(("k", "softcap"), [(1, None), (5, None), (5, 2.0)])
def test_matches_float64_bucket_reference_and_sparse_loss(name, coef, k, softcap):
    hs, head, mask = _student(21 + k, softcap=softcap, bias=softcap is None)
    zt, ids, lp = _teacher(31 + k, k)
    for reduction, temperature, block in SETTINGS:
        out = chunked_topk_divergence(hs, head, ids, lp, name, coef, temperature, mask,
                                      reduction, block_size=block)  # fmt: skip
        zs = _logits(hs, head)
        ref = _bucket_reference(name, coef, zs, zt, ids, temperature, mask, reduction)
        sparse = sparse_divergence(zs, ids, lp, name, coef, temperature, mask, reduction)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
        for a, b, c in zip(_grads(out, hs, head), _grads(ref, hs, head),
                           _grads(sparse, hs, head), strict=True):  # fmt: skip
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)
            torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("name", "coef"), [("generalized_jsd", 0.0), ("generalized_jsd", 0.5),
                                            ("reverse_kl", 0.0), ("total_variation", 0.0)])
def test_given_tail_is_the_teachers_tail_bucket(name, coef):
    """An explicit ``teacher_tail`` is the teacher's tail bucket, in value and gradient: here a
    teacher whose top-k keeps its shape but whose tail mass is another one (the support scaled so
    that support + tail still sum to 1, as the closed-form gradients assume)."""
    hs, head, mask = _student(41)
    _, ids, lp = _teacher(42, 4)
    tail_mass = torch.rand(B, T, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tail_mass = tail_mass * 0.5 + 0.01
    lp = lp - lp.logsumexp(-1, keepdim=True) + (1 - tail_mass).log().unsqueeze(-1)
    out = chunked_topk_divergence(hs, head, ids, lp, name, coef, mask=mask, reduction="sum",
                                  teacher_tail=tail_mass.log(), block_size=4)  # fmt: skip
    ps_k = softmax64(_logits(hs, head)).gather(-1, ids)
    ps_b = torch.cat([ps_k, 1 - ps_k.sum(-1, keepdim=True)], -1)
    pt_b = torch.cat([lp.exp(), tail_mass.unsqueeze(-1)], -1)
    ref = reduce64(ref_from_probs(name, coef, ps_b, pt_b), mask, "sum")
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)
    for a, b in zip(_grads(out, hs, head), _grads(ref, hs, head), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_full_support_equals_dense_loss(name, coef):
    """K = V (ids in any order): no tail bucket; the dense divergence on full logits and the
    chunked dense loss on the same teacher, to float64 rounding."""
    hs, head, mask = _student(51)
    g = torch.Generator().manual_seed(52)
    ht = torch.randn(B, T, 12, generator=g, dtype=torch.float64)
    teacher = LMHead(torch.randn(V, 12, generator=g, dtype=torch.float64), None, 0.9)
    zt = _logits(ht, teacher)
    ids = torch.argsort(torch.rand(B, T, V, generator=g), dim=-1)
    lp = torch.log_softmax(zt, -1).gather(-1, ids)
    for reduction, temperature, block in SETTINGS:
        out = chunked_topk_divergence(hs, head, ids, lp, name, coef, temperature, mask,
                                      reduction, block_size=block)  # fmt: skip
        zs = _logits(hs, head)
        # the dense loss's teacher at temperature 1 (a top-k teacher's log-probs are as given)
        dense = divergence(name, zs / temperature, zt, coef, 1.0, mask, reduction)
        chunked = chunked_divergence(hs, head, ht, teacher, name, coef, 1.0, mask, reduction,
                                     block_size=block) if temperature == 1.0 else dense  # fmt: skip
        torch.testing.assert_close(out, dense, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(out, chunked, rtol=1e-12, atol=1e-13)
        for a, b in zip(_grads(out, hs, head), _grads(dense, hs, head), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_float32_inputs_and_no_grad_path():
    hs64, head64, mask = _student(61)
    _, ids, lp = _teacher(62, 7)
    hs = hs64.detach().float().requires_grad_()
    head = LMHead(head64.weight.detach().float().requires_grad_(), head64.bias.detach().float(),
                  head64.logit_scale)  # fmt: skip
    out = chunked_topk_divergence(hs, head, ids, lp.float(), "generalized_jsd", 0.5, mask=mask)
    assert out.dtype == torch.float32
    ref = chunked_topk_divergence(hs64, head64, ids, lp, "generalized_jsd", 0.5, mask=mask)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    out.backward()
    (g_ref,) = torch.autograd.grad(ref, head64.weight)
    torch.testing.assert_close(head.weight.grad.double(), g_ref, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        again = chunked_topk_divergence(hs, head, ids, lp.float(), "generalized_jsd", 0.5,
                                        mask=mask)  # fmt: skip
    torch.testing.assert_close(again, out.detach())


@pytest.mark.parametrize(("name", "coef"), [("generalized_jsd", 0.5), ("reverse_kl", 0.0)])
def test_all_masked_is_zero_with_zero_grads(name, coef):
    hs, head, _ = _student(71)
    _, ids, lp = _teacher(72, 3)
    out = chunked_topk_divergence(hs, head, ids, lp, name, coef,
                                  mask=torch.zeros(B, T, dtype=torch.bool))  # fmt: skip
    assert out.item() == 0.0
    out.backward()
    assert (hs.grad == 0).all() and (head.weight.grad == 0).all()


def test_2d_inputs_equal_batched_ones():
    hs, head, mask = _student(81)
    _, ids, lp = _teacher(82, 5)
    flat = chunked_topk_divergence(
        hs.reshape(-1, H), head, ids.reshape(-1, 5), lp.reshape(-1, 5), "reverse_kl",
        mask=mask.reshape(-1),
    )  # fmt: skip
    batched = chunked_topk_divergence(hs, head, ids, lp, "reverse_kl", mask=mask)
    torch.testing.assert_close(flat, batched)


def test_bad_shapes_raise():
    hs, head, _ = _student(91)
    _, ids, lp = _teacher(92, 3)
    with pytest.raises(DataError, match=r"\[\.\.\., K\]"):
        chunked_topk_divergence(hs, head, ids[:, :2], lp[:, :2], "forward_kl")
    with pytest.raises(DataError, match="hidden size"):
        chunked_topk_divergence(hs[..., :3], head, ids, lp, "forward_kl")
    with pytest.raises(DataError, match="integer"):
        chunked_topk_divergence(hs, head, ids.float(), lp, "forward_kl")
    with pytest.raises(DataError, match="tail"):
        chunked_topk_divergence(hs, head, ids, lp, "forward_kl", teacher_tail=lp[..., 0, None])

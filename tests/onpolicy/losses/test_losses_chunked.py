"""Chunked divergence (hidden states + LM heads) == dense form == float64 reference."""

from __future__ import annotations

import pytest
import torch
from losses_reference import CASES, random_mask, ref_divergence

from onpolicy.errors import DataError, TrainingError
from onpolicy.losses import LMHead, chunked_divergence, divergence

B, T, V, HS, HT = 3, 6, 29, 8, 12


def _heads(seed: int, dtype=torch.float64, bias=True, softcap=None):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(B, T, HS, generator=g, dtype=dtype).requires_grad_()
    ht = torch.randn(B, T, HT, generator=g, dtype=dtype)
    ws = (torch.randn(V, HS, generator=g, dtype=dtype) * 0.7).requires_grad_()
    wt = (torch.randn(V, HT, generator=g, dtype=dtype) * 0.7).requires_grad_()
    bs = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    bt = torch.randn(V, generator=g, dtype=dtype) if bias else None
    student = LMHead(ws, bs, logit_scale=1.3, softcap=softcap)
    teacher = LMHead(wt, bt, logit_scale=0.8, softcap=softcap)
    return hs, student, ht, teacher, random_mask((B, T), g)


def _logits(h, head: LMHead):
    y = h @ head.weight.t()
    if head.bias is not None:
        y = y + head.bias
    y = y * head.logit_scale
    return y if head.softcap is None else head.softcap * torch.tanh(y / head.softcap)


def _grads(out, hs, student):
    params = [hs, student.weight] + ([student.bias] if student.bias is not None else [])
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
    return torch.autograd.grad((out * w).sum(), params, retain_graph=True)


@pytest.mark.parametrize(("name", "coef"), CASES)
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_chunked_equals_reference_float64(name, coef, softcap):
    hs, student, ht, teacher, mask = _heads(11, softcap=softcap, bias=softcap is None)
    for reduction, temperature, block in (("mean", 1.0, 4), ("sum", 0.6, 5), ("none", 1.7, 3)):
        out = chunked_divergence(hs, student, ht, teacher, name, coef, temperature, mask, reduction,
                                 block_size=block)  # fmt: skip
        zs, zt = _logits(hs, student), _logits(ht, teacher).detach()
        ref = ref_divergence(name, coef, zs, zt, temperature, mask, reduction)
        dense = divergence(name, zs, zt, coef, temperature, mask, reduction)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
        for a, b, c in zip(_grads(out, hs, student), _grads(ref, hs, student),
                           _grads(dense, hs, student), strict=True):  # fmt: skip
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)


FEW = [("generalized_jsd", 0.0), ("generalized_jsd", 0.5), ("generalized_jsd", 1.0),
       ("total_variation", 0.0)]  # fmt: skip


@pytest.mark.parametrize(("name", "coef"), FEW)
def test_float32_and_bf16_inputs(name, coef):
    hs64, student64, ht64, teacher64, mask = _heads(12)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-5)):
        hs = hs64.detach().to(dtype).requires_grad_()
        ws = student64.weight.detach().to(dtype).requires_grad_()
        student = LMHead(ws, student64.bias.detach().to(dtype), 1.3)
        teacher = LMHead(
            teacher64.weight.detach().to(dtype), teacher64.bias.detach().to(dtype), 0.8
        )
        ht = ht64.to(dtype)
        out = chunked_divergence(hs, student, ht, teacher, name, coef, mask=mask, block_size=4)
        assert out.dtype == torch.float32
        # reference on the same (rounded) inputs, in float64
        ws64 = ws.detach().double().requires_grad_()
        zs = _logits(hs.detach().double(), LMHead(ws64, student.bias.double(), 1.3))
        zt = _logits(ht.double(), LMHead(teacher.weight.double(), teacher.bias.double(), 0.8))
        ref = ref_divergence(name, coef, zs, zt, mask=mask)
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
        out.backward()
        assert hs.grad.dtype == dtype and ws.grad.dtype == dtype
        (g_ref,) = torch.autograd.grad(ref, ws64)
        rtol = 1e-4 if dtype == torch.float32 else 1e-2  # bf16 gradients keep ~3 digits
        torch.testing.assert_close(ws.grad.double(), g_ref, rtol=rtol, atol=1e-5)


def test_teacher_gets_no_gradient_and_2d_inputs_work():
    hs, student, ht, teacher, mask = _heads(13)
    flat = chunked_divergence(hs.reshape(-1, HS), student, ht.reshape(-1, HT), teacher,
                              "reverse_kl", mask=mask.reshape(-1))  # fmt: skip
    batched = chunked_divergence(hs, student, ht, teacher, "reverse_kl", mask=mask)
    torch.testing.assert_close(flat, batched)
    batched.backward()
    assert teacher.weight.grad is None and hs.grad is not None


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_all_masked_is_zero_with_zero_grads(name, coef):
    hs, student, ht, teacher, _ = _heads(14)
    mask = torch.zeros(B, T, dtype=torch.bool)
    out = chunked_divergence(hs, student, ht, teacher, name, coef, mask=mask)
    assert out.item() == 0.0
    out.backward()
    assert (hs.grad == 0).all() and (student.weight.grad == 0).all()


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_identical_models_give_zero(name, coef):
    hs, student, _, _, mask = _heads(15)
    out = chunked_divergence(hs, student, hs.detach(), student, name, coef, mask=mask,
                             reduction="none")  # fmt: skip
    assert out.abs().max() < 1e-12


def test_no_grad_path_matches_and_default_block_size():
    hs, student, ht, teacher, mask = _heads(16)
    with torch.no_grad():
        a = chunked_divergence(hs, student, ht, teacher, "generalized_jsd", 0.3, mask=mask)
    b = chunked_divergence(hs, student, ht, teacher, "generalized_jsd", 0.3, mask=mask)
    torch.testing.assert_close(a, b.detach())


def test_bad_shapes_raise():
    hs, student, ht, teacher, _ = _heads(17)
    with pytest.raises(DataError, match="vocab"):
        chunked_divergence(hs, student, ht, LMHead(teacher.weight[:5]), "forward_kl")
    with pytest.raises(DataError, match="hidden size"):
        chunked_divergence(hs, student, hs, teacher, "forward_kl")
    with pytest.raises(DataError, match="leading"):
        chunked_divergence(hs, student, ht[:, :2], teacher, "forward_kl")


def test_second_backward_raises_clear_error():
    hs, student, ht, teacher, mask = _heads(18)
    out = chunked_divergence(hs, student, ht, teacher, "forward_kl", mask=mask)
    out.backward(retain_graph=True)
    with pytest.raises(TrainingError, match="once"):
        out.backward()

"""Dense divergences vs an independent float64 reference: values, gradients, edge cases."""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from losses_reference import CASES, random_mask, ref_divergence

from onpolicy.errors import ConfigError, DataError
from onpolicy.losses import (
    DIVERGENCES,
    divergence,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_kl,
    total_variation,
)

B, T, V = 3, 5, 13


def _inputs(seed: int, dtype=torch.float32, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(B, T, V, generator=g) * scale).to(dtype).requires_grad_()
    t = (torch.randn(B, T, V, generator=g) * scale).to(dtype).requires_grad_()
    return s, t, random_mask((B, T), g)


@pytest.mark.parametrize(("name", "coef"), CASES)
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
def test_matches_float64_reference(name, coef, temperature):
    s, t, mask = _inputs(zlib.crc32(f"{name}{coef}{temperature}".encode()))
    for reduction in ("mean", "sum", "none"):
        out = divergence(name, s, t, coef, temperature, mask, reduction)
        ref = ref_divergence(name, coef, s, t, temperature, mask, reduction)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
        w = torch.randn(out.shape, dtype=torch.float64)
        g_out = torch.autograd.grad((out.double() * w).sum(), (s, t), materialize_grads=True)
        g_ref = torch.autograd.grad((ref * w).sum(), (s, t))
        for a, b in zip(g_out, g_ref, strict=True):
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)
        if reduction == "none":
            assert (out[~mask] == 0).all()


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_float64_inputs_give_float64_precision(name, coef):
    s, t, mask = _inputs(7, torch.float64)
    out = divergence(name, s, t, coef, 1.3, mask, "none")
    ref = ref_divergence(name, coef, s, t, 1.3, mask, "none")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-13)
    (g,) = torch.autograd.grad(out.sum(), s)
    (g_ref,) = torch.autograd.grad(ref.sum(), s)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_identical_distributions_give_zero(name, coef):
    s, _, mask = _inputs(3)
    t = s.detach().clone()
    out = divergence(name, s, t, coef, mask=mask, reduction="none")
    assert out.abs().max() < 1e-6
    (g,) = torch.autograd.grad(out.sum(), s)
    if name != "total_variation":  # |x| is not differentiable at 0; its subgradient 0 is used
        assert g.abs().max() < 1e-6


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_all_masked_mean_is_zero_with_finite_zero_grads(name, coef):
    s, t, _ = _inputs(4)
    mask = torch.zeros(B, T, dtype=torch.bool)
    out = divergence(name, s, t, coef, mask=mask, reduction="mean")
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(s.grad).all() and (s.grad == 0).all()


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_bf16_inputs_compute_in_float32(name, coef):
    s, t, mask = _inputs(5, torch.bfloat16)
    out = divergence(name, s, t, coef, mask=mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_divergence(name, coef, s, t, 1.0, mask), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    out.backward()
    assert s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad.float()).all()


def test_hand_computed_values():
    # p_s = (1/2, 1/2), p_t = (1/4, 3/4) from logits log p.
    s = torch.tensor([[math.log(0.5), math.log(0.5)]])
    t = torch.tensor([[math.log(0.25), math.log(0.75)]])
    fkl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    rkl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    m = (0.375, 0.625)  # beta = 1/2
    jsd = 0.5 * (0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1])) + 0.5 * (
        0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    )
    assert forward_kl(s, t).item() == pytest.approx(fkl, rel=1e-6)
    assert reverse_kl(s, t).item() == pytest.approx(rkl, rel=1e-6)
    assert generalized_jsd(s, t, beta=0.5).item() == pytest.approx(jsd, rel=1e-6)
    assert total_variation(s, t).item() == pytest.approx(0.25, rel=1e-6)
    m_skew = (0.1 * 0.25 + 0.9 * 0.5, 0.1 * 0.75 + 0.9 * 0.5)  # alpha = 0.1, forward
    skew = 0.25 * math.log(0.25 / m_skew[0]) + 0.75 * math.log(0.75 / m_skew[1])
    assert skew_kl(s, t, alpha=0.1).item() == pytest.approx(skew, rel=1e-6)


def test_public_wrappers_match_the_registry():
    s, t, mask = _inputs(6)
    torch.testing.assert_close(generalized_jsd(s, t, 0.0, mask=mask), forward_kl(s, t, mask=mask))
    torch.testing.assert_close(generalized_jsd(s, t, 1.0, mask=mask), reverse_kl(s, t, mask=mask))
    torch.testing.assert_close(skew_kl(s, t, 0.0, "reverse"), reverse_kl(s, t))
    torch.testing.assert_close(
        skew_kl(s, t, 0.3, "reverse", 2.0, mask, "sum"),
        divergence("skew_reverse_kl", s, t, 0.3, 2.0, mask, "sum"),
    )
    assert total_variation(s, t, reduction="none").max() <= 1.0


def test_zero_probability_teacher_tokens_are_finite():
    s, t, mask = _inputs(8)
    t = t.detach().clone()
    t[..., :4] = -math.inf  # tokens the teacher forbids
    out = forward_kl(s, t, mask=mask)
    ref = ref_divergence("forward_kl", 0.0, s, t, 1.0, mask)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    out.backward()
    assert torch.isfinite(s.grad).all()
    # p_s > 0 where p_t = 0 would be infinite: reverse KL is taken on the teacher's support
    # (kernels docstring; checked against float64 in test_teacher_mask.py)
    assert math.isfinite(reverse_kl(s, t).item())


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_closed_form_logit_gradient_matches_autograd(name):
    g = torch.Generator().manual_seed(9)
    zs = (torch.randn(4, V, generator=g, dtype=torch.float64) * 2).requires_grad_()
    log_pt = torch.log_softmax(torch.randn(4, V, generator=g, dtype=torch.float64), -1)
    kernel = DIVERGENCES[name]
    for coef in (0.0, 0.3, 1.0) if kernel.coef_name else (0.0,):
        log_ps = torch.log_softmax(zs, -1)
        value = kernel.value(log_ps, log_pt, coef)
        (expected,) = torch.autograd.grad(value.sum(), zs)
        # value_and_grad may overwrite its inputs: hand it copies
        value2, grad = kernel.value_and_grad(log_ps.detach().clone(), log_pt.clone(), coef)
        torch.testing.assert_close(value2, value.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-13)


def test_bad_inputs_raise_clear_errors():
    s, t, mask = _inputs(10)
    with pytest.raises(ConfigError, match="beta"):
        generalized_jsd(s, t, beta=1.5)
    with pytest.raises(ConfigError, match="reduction"):
        forward_kl(s, t, reduction="batchmean")
    with pytest.raises(ConfigError, match="temperature"):
        forward_kl(s, t, temperature=0.0)
    with pytest.raises(ConfigError, match="direction"):
        skew_kl(s, t, direction="sideways")
    with pytest.raises(ConfigError, match="unknown divergence"):
        divergence("kl", s, t)
    with pytest.raises(DataError, match="mask has shape"):
        forward_kl(s, t, mask=mask[:, :2])
    with pytest.raises(DataError, match="0/1"):
        forward_kl(s, t, mask=mask.float() * 2)
    with pytest.raises(DataError, match="same shape"):
        forward_kl(s, t[..., :5])

"""A teacher that masks part of its vocabulary with -inf (exactly zero probability): every kernel,
both forms (autograd value and closed-form gradient), finite and equal to a float64 reference.

The reference (``losses_reference``) works on probabilities; where the reverse KL would be
infinite it is taken on the teacher's support (student restricted and renormalized), the
documented definition of ``onpolicy.losses.kernels``."""

from __future__ import annotations

import pytest
import torch
from losses_reference import CASES, ref_from_probs, softmax64

from onpolicy.losses import divergence, sampled_token_reward
from onpolicy.losses.kernels import DIVERGENCES

V = 11


def _masked_teacher(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(6, V, generator=g, dtype=torch.float64)
    teacher = torch.randn(6, V, generator=g, dtype=torch.float64)
    teacher[:, :3] = float("-inf")  # three tokens the teacher forbids everywhere
    teacher[2, 5:8] = float("-inf")  # and more in one row
    return student, teacher


def _reference(name: str, coef: float, student: torch.Tensor, teacher: torch.Tensor):
    ps, pt = softmax64(student), softmax64(teacher)
    reverse = name == "reverse_kl" or (name, coef) in (
        ("generalized_jsd", 1.0),
        ("skew_reverse_kl", 0.0),
    )
    if reverse:  # on the teacher's support
        ps = torch.where(pt > 0, ps, torch.zeros_like(ps))
        ps = ps / ps.sum(-1, keepdim=True)
    return ref_from_probs(name, coef, ps, pt)


@pytest.mark.parametrize(("name", "coef"), CASES)
def test_masked_teacher_value_and_gradient_match_float64(name, coef):
    student, teacher = _masked_teacher(0)
    z = student.clone().requires_grad_(True)
    ref = _reference(name, coef, z, teacher)
    ref.sum().backward()
    assert torch.isfinite(ref).all()
    ref_grad = z.grad.clone()

    z2 = student.clone().requires_grad_(True)
    got = divergence(name, z2, teacher, coef=coef, reduction="none")
    got.sum().backward()
    assert torch.isfinite(got).all() and torch.isfinite(z2.grad).all()
    torch.testing.assert_close(got, ref.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(z2.grad, ref_grad, rtol=1e-7, atol=1e-10)

    kernel = DIVERGENCES[name]
    log_ps = torch.log_softmax(student, -1)
    log_pt = torch.log_softmax(teacher, -1)
    value, grad = kernel.value_and_grad(log_ps.clone(), log_pt.clone(), coef)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(value, ref.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-10)


def test_unmasked_teacher_reverse_kl_is_unchanged():
    """The support restriction is the identity when the teacher masks nothing."""
    g = torch.Generator().manual_seed(3)
    s, t = (torch.randn(4, V, generator=g, dtype=torch.float64) for _ in range(2))
    got = divergence("reverse_kl", s, t, reduction="none")
    torch.testing.assert_close(got, ref_from_probs("reverse_kl", 0.0, softmax64(s), softmax64(t)))


def test_masked_tokens_get_no_student_gradient_under_reverse_kl():
    student, teacher = _masked_teacher(1)
    z = student.clone().requires_grad_(True)
    divergence("reverse_kl", z, teacher, reduction="sum").backward()
    assert z.grad[:, :3].abs().max() < 1e-12 and z.grad[2, 5:8].abs().max() < 1e-12


def test_sampled_token_reward_of_a_masked_token_is_a_finite_penalty():
    student = torch.tensor([-1.0, -2.0, -0.5])
    teacher = torch.tensor([float("-inf"), -0.5, float("nan")])
    reward = sampled_token_reward(student, teacher)
    assert reward[0] == -99.0 and reward[1] == 1.5  # -100 - (-1); -0.5 - (-2)
    assert reward[2].isnan()  # a broken teacher stays visible

"""Sampled-token estimator: log-probs, reward, and the policy-gradient loss (PPO clip / TIS)."""

from __future__ import annotations

import math

import pytest
import torch

from onpolicy.errors import ConfigError, DataError
from onpolicy.losses import (
    policy_gradient_loss,
    reverse_kl,
    sampled_token_reward,
    token_logprobs,
)

T, V = 4, 9


def test_token_logprobs_matches_log_softmax_gather():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, T, V, generator=g, dtype=torch.bfloat16)
    ids = torch.randint(0, V, (2, T), generator=g)
    out = token_logprobs(logits, ids, temperature=0.7)
    ref = torch.log_softmax(logits.double() / 0.7, -1).gather(-1, ids[..., None])[..., 0]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(DataError, match="token_ids"):
        token_logprobs(logits, ids[:, :2])


def test_reward_is_detached_log_ratio():
    s = torch.tensor([-1.0, -2.0], requires_grad=True)
    t = torch.tensor([-0.5, -3.0])
    r = sampled_token_reward(s, t)
    assert r.tolist() == [0.5, -1.0] and not r.requires_grad


@pytest.mark.parametrize("clip_mode", ["ppo", "tis"])
def test_expected_policy_gradient_is_the_reverse_kl_gradient(clip_mode):
    """Weighting every token by p_s (the exact expectation over samples) at ratio 1 gives
    grad KL(p_s || p_t) exactly."""
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(T, V, generator=g, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(T, V, generator=g, dtype=torch.float64)
    log_ps = torch.log_softmax(zs, -1)  # every token v at every position t: [T, V]
    log_pt = torch.log_softmax(zt, -1)
    adv = sampled_token_reward(log_ps, log_pt)
    per_token = policy_gradient_loss(log_ps, log_ps.detach(), adv, clip_mode=clip_mode,
                                     reduction="none")  # fmt: skip
    expected_loss = (log_ps.exp().detach() * per_token).sum(-1).mean()
    (g_pg,) = torch.autograd.grad(expected_loss, zs)
    (g_kl,) = torch.autograd.grad(reverse_kl(zs, zt), zs)
    torch.testing.assert_close(g_pg, g_kl, rtol=1e-10, atol=1e-12)


def test_ppo_clipping_values_and_gradients():
    # ratios 1.5 (A > 0: clipped at 1.2, no grad), 0.5 (A < 0: clipped at 0.8, no grad),
    # 1.1 (inside: grad -A * ratio), 1.5 with A < 0 (unclipped branch is smaller: grad -A * ratio)
    behaviour = torch.zeros(4, dtype=torch.float64)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.1, 1.5], dtype=torch.float64)).requires_grad_()
    adv = torch.tensor([2.0, -1.0, 3.0, -1.0], dtype=torch.float64)
    per_token = policy_gradient_loss(logp, behaviour, adv, clip_eps=0.2, reduction="none")
    torch.testing.assert_close(per_token, torch.tensor([-2.4, 0.8, -3.3, 1.5], dtype=torch.float64))
    (grad,) = torch.autograd.grad(per_token.sum(), logp)
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.0, -3.3, 1.5], dtype=torch.float64))


def test_truncated_importance_sampling_values_and_gradients():
    behaviour = torch.zeros(3, dtype=torch.float64)
    logp = torch.log(torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64)).requires_grad_()
    adv = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    per_token = policy_gradient_loss(logp, behaviour, adv, clip_mode="tis", tis_cap=2.0,
                                     reduction="none")  # fmt: skip
    expected = torch.tensor([-0.5, 3.0, -2.0], dtype=torch.float64)  # -min(r, 2) * A
    torch.testing.assert_close(per_token, expected)
    (grad,) = torch.autograd.grad(per_token.sum(), logp)
    torch.testing.assert_close(grad, expected)  # d/dlogp = -min(r, 2) * A (weight held constant)


@pytest.mark.parametrize("clip_mode", ["ppo", "tis"])
def test_masked_junk_and_all_masked(clip_mode):
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    behaviour = torch.tensor([[-1.1, -math.inf, 50.0]])  # junk where masked
    adv = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, False, False]])
    out = policy_gradient_loss(logp, behaviour, adv, mask, clip_mode=clip_mode)
    assert math.isfinite(out.item())
    out.backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad[0, 1:] == 0).all()
    logp.grad = None
    empty = policy_gradient_loss(logp, behaviour, adv, torch.zeros_like(mask), clip_mode=clip_mode)
    assert empty.item() == 0.0
    empty.backward()
    assert (logp.grad == 0).all()


def test_bad_arguments_raise():
    x = torch.zeros(3)
    with pytest.raises(ConfigError, match="clip_mode"):
        policy_gradient_loss(x, x, x, clip_mode="grpo")
    with pytest.raises(ConfigError, match="clip_eps"):
        policy_gradient_loss(x, x, x, clip_eps=1.5)
    with pytest.raises(DataError, match="advantages"):
        policy_gradient_loss(x, x, torch.zeros(2))

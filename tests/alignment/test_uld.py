"""ULD: against POT's 1-D Wasserstein distance, float64 autograd, hand cases, edge cases."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from alignment.errors import AlignmentError
from alignment.spans.uld import sorted_l1_rows, topk_l1_rows, uld_loss, uld_loss_topk


def _probs(*shape: int, seed: int, dtype=torch.float64, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=g, dtype=dtype) * scale, dim=-1)


def _reference_uld(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """float64 autograd reference: torch.sort + explicit zero padding + L1."""
    n = max(p.shape[-1], q.shape[-1])
    ps = torch.nn.functional.pad(p.sort(-1, descending=True).values, (0, n - p.shape[-1]))
    qs = torch.nn.functional.pad(q.sort(-1, descending=True).values, (0, n - q.shape[-1]))
    return (ps - qs).abs().sum(-1)


@pytest.mark.parametrize(("Vs", "Vt"), [(7, 7), (5, 11), (13, 4), (300, 500)])
def test_uld_equals_n_times_pot_wasserstein_1d(Vs: int, Vt: int) -> None:
    p, q = _probs(6, Vs, seed=Vs), _probs(6, Vt, seed=Vt + 1)
    got = uld_loss(p, q, reduction="none")
    n = max(Vs, Vt)
    for r in range(6):
        u = np.pad(p[r].numpy(), (0, n - Vs))
        v = np.pad(q[r].numpy(), (0, n - Vt))
        w1 = ot.wasserstein_1d(u, v, p=1)  # uniform weights on the n values
        assert got[r].item() == pytest.approx(n * w1, rel=1e-9, abs=1e-12)


def test_uld_hand_computed() -> None:
    p = torch.tensor([[0.1, 0.6, 0.3]])
    q = torch.tensor([[0.5, 0.5]])
    # sorted: [0.6, 0.3, 0.1] vs [0.5, 0.5, 0] -> 0.1 + 0.2 + 0.1
    assert uld_loss(p, q).item() == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_uld_values_and_grads_match_float64_autograd(reduction: str) -> None:
    p = _probs(3, 4, 37, seed=0).requires_grad_()
    q = _probs(3, 4, 53, seed=1).requires_grad_()
    mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(2)) > 0.3
    got = uld_loss(p, q, mask=mask, reduction=reduction)
    ref_rows = torch.where(mask, _reference_uld(p, q), 0.0)
    ref = {"mean": ref_rows.sum() / mask.sum(), "sum": ref_rows.sum(), "none": ref_rows}[reduction]
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ref)
    gp, gq = torch.autograd.grad((got * w).sum(), (p, q))
    rp, rq = torch.autograd.grad((ref * w).sum(), (p, q))
    torch.testing.assert_close(gp, rp)
    torch.testing.assert_close(gq, rq)


def test_uld_float32_input_matches_float64() -> None:
    p, q = _probs(8, 1000, seed=3), _probs(8, 700, seed=4)
    got = uld_loss(p.float(), q.float(), reduction="none")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _reference_uld(p, q), rtol=1e-5, atol=1e-6)


def test_uld_identical_is_zero_and_permutation_invariant() -> None:
    p = _probs(5, 64, seed=5)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    assert uld_loss(p, p[:, perm], reduction="sum").item() == 0.0
    # padding with zeros does not change anything
    assert uld_loss(p, torch.nn.functional.pad(p, (0, 9)), reduction="sum").item() == 0.0


def test_uld_all_masked_is_zero_not_nan() -> None:
    p = _probs(2, 3, 10, seed=6).requires_grad_()
    q = _probs(2, 3, 12, seed=7)
    loss = uld_loss(p, q, mask=torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    (g,) = torch.autograd.grad(loss, p)
    assert torch.all(g == 0)


def test_uld_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(AlignmentError, match="before the last"):
        uld_loss(torch.rand(2, 5), torch.rand(3, 5))
    with pytest.raises(AlignmentError, match="reduction"):
        uld_loss(torch.rand(2, 5), torch.rand(2, 5), reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(AlignmentError, match="mask shape"):
        uld_loss(torch.rand(2, 5), torch.rand(2, 5), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(AlignmentError, match="k="):
        uld_loss_topk(torch.rand(2, 5), torch.rand(2, 5), k=0)


def test_sorted_l1_rows_signs_are_the_subgradient() -> None:
    p, q = _probs(4, 9, seed=8), _probs(4, 6, seed=9)
    loss, sp, sq = sorted_l1_rows(p, q, grad_p=True, grad_q=True)
    assert sp is not None and sq is not None and sp.dtype == torch.int8
    pr, qr = p.clone().requires_grad_(), q.clone().requires_grad_()
    gp, gq = torch.autograd.grad(_reference_uld(pr, qr).sum(), (pr, qr))
    torch.testing.assert_close(sp.double(), gp)
    torch.testing.assert_close(sq.double(), gq)
    torch.testing.assert_close(loss, _reference_uld(p, q))


@pytest.mark.parametrize(("Vs", "Vt"), [(40, 40), (40, 65), (70, 33)])
def test_topk_exact_when_k_covers_vocab(Vs: int, Vt: int) -> None:
    p = _probs(3, Vs, seed=11).requires_grad_()
    q = _probs(3, Vt, seed=12).requires_grad_()
    got = uld_loss_topk(p, q, k=max(Vs, Vt), reduction="sum")
    ref = _reference_uld(p, q).sum()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(torch.autograd.grad(got, (p, q)), torch.autograd.grad(ref, (p, q)))


@pytest.mark.parametrize("k", [1, 4, 16, 63])
def test_topk_is_a_lower_bound_within_twice_the_smaller_tail(k: int) -> None:
    p, q = _probs(20, 64, seed=13, scale=1.0), _probs(20, 90, seed=14, scale=2.0)
    approx = uld_loss_topk(p, q, k=k, reduction="none")
    exact = _reference_uld(p, q)
    tail_p = 1 - p.topk(k, -1).values.sum(-1)
    tail_q = 1 - q.topk(k, -1).values.sum(-1)
    assert torch.all(approx <= exact + 1e-12)
    assert torch.all(exact <= approx + 2 * torch.minimum(tail_p, tail_q) + 1e-12)


def test_topk_grads_match_float64_autograd_reference() -> None:
    p = _probs(5, 50, seed=15).requires_grad_()
    q = _probs(5, 80, seed=16)
    mask = torch.tensor([True, False, True, True, False])
    got = uld_loss_topk(p, q, k=8, mask=mask)
    hp, hq = p.topk(8, -1).values, q.topk(8, -1).values
    rows = (hp - hq).abs().sum(-1) + ((p.sum(-1) - hp.sum(-1)) - (q.sum(-1) - hq.sum(-1))).abs()
    ref = rows[mask].mean()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(torch.autograd.grad(got, p)[0], torch.autograd.grad(ref, p)[0])


@pytest.mark.parametrize(("Vs", "Vt", "k"), [(30, 50, 6), (50, 30, 40), (20, 20, 20)])
def test_topk_l1_rows_signs_are_the_gradient_of_uld_loss_topk(Vs: int, Vt: int, k: int) -> None:
    p = _probs(4, Vs, seed=17).requires_grad_()
    q = _probs(4, Vt, seed=18)
    loss, sign = topk_l1_rows(p.detach(), q, k)
    ref = uld_loss_topk(p, q, k=k, reduction="none")
    torch.testing.assert_close(loss, ref.detach())
    (grad,) = torch.autograd.grad(ref.sum(), p)
    torch.testing.assert_close(sign.double(), grad)


def test_float32_packed_sort_path_matches_float64_grads() -> None:
    """float32 rows go through the packed 64-bit key sort; same values and signs as float64."""
    p64, q64 = _probs(6, 3000, seed=19), _probs(6, 4100, seed=20)
    p64[0, :50] = 0.0  # zeros (underflow) sort first, like the padding
    p32 = p64.float().requires_grad_()
    loss = uld_loss(p32, q64.float(), reduction="sum")
    (g32,) = torch.autograd.grad(loss, p32)
    p_ref = p32.detach().double().requires_grad_()
    ref = _reference_uld(p_ref, q64.float().double()).sum()
    (g_ref,) = torch.autograd.grad(ref, p_ref)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(g32.double(), g_ref)

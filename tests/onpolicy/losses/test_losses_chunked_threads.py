"""The chunked losses at 1, 2 and 4 torch threads (issue 17): per-token values bit-identical at
every thread count (every op on a token's row is row-wise; blocks of 64 rows, V = 5,000), the
gradients equal up to the last bits of the matmuls torch splits by thread count, and both equal
to the float64 form; the dense form checked against full-logits ``divergence``."""

from __future__ import annotations

import pytest
import torch

from onpolicy.losses import LMHead, chunked_divergence, divergence
from onpolicy.losses.chunked_topk import chunked_topk_divergence

THREADS = (1, 2, 4)
N, V, H = 150, 5000, 24
CASES = [
    ("generalized_jsd", 0.5, None),
    ("generalized_jsd", 0.5, 5.0),
    ("forward_kl", 0.0, None),
    ("reverse_kl", 0.0, 5.0),
    ("skew_reverse_kl", 0.3, None),
    ("total_variation", 0.0, None),
]


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)  # float32 draws, then cast: the same numbers in float64
    hs = torch.randn(N, H, generator=g)
    ht = torch.randn(N, H + 8, generator=g)
    ws = torch.randn(V, H, generator=g) * 0.3
    wt = torch.randn(V, H + 8, generator=g) * 0.3
    mask = torch.rand(N, generator=g) > 0.2
    return (*(x.to(dtype) for x in (hs, ht, ws, wt)), mask)


def _dense(name, coef, cap, dtype=torch.float32):
    hs, ht, ws, wt, mask = _inputs(dtype)
    hs.requires_grad_()
    values = chunked_divergence(
        hs, LMHead(ws, None, 1.1, cap), ht, LMHead(wt, None, 0.9, cap), name, coef,
        temperature=1.3, mask=mask, reduction="none", block_size=64,
    )  # fmt: skip
    (values * torch.arange(N, dtype=dtype)).sum().backward()
    return values.detach(), hs.grad


def _topk():
    hs, _, ws, _, mask = _inputs()
    g = torch.Generator().manual_seed(1)
    lp, ids = torch.log_softmax(torch.randn(N, V, generator=g) * 2, -1).topk(20)
    hs.requires_grad_()
    values = chunked_topk_divergence(
        hs, LMHead(ws), ids, lp, "generalized_jsd", 0.5, mask=mask, reduction="none",
        block_size=64,
    )  # fmt: skip
    values.sum().backward()
    return values.detach(), hs.grad


@pytest.mark.parametrize(("name", "coef", "cap"), CASES)
def test_values_identical_at_any_thread_count(name, coef, cap, torch_threads):
    out = {}
    for n in THREADS:
        torch_threads(n)
        out[n] = _dense(name, coef, cap)
    for n in THREADS[1:]:
        assert torch.equal(out[n][0], out[1][0])
        # the gradient's matmuls run on torch's own team, whose sums split by thread count
        torch.testing.assert_close(out[n][1], out[1][1], rtol=1e-4, atol=1e-5)
    ref_values, ref_grad = _dense(name, coef, cap, torch.float64)
    torch.testing.assert_close(out[1][0].double(), ref_values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[1][1].double(), ref_grad, rtol=1e-3, atol=1e-4)


def test_topk_identical_at_any_thread_count(torch_threads):
    out = {}
    for n in THREADS:
        torch_threads(n)
        out[n] = _topk()
    for n in THREADS[1:]:
        assert torch.equal(out[n][0], out[1][0])
        torch.testing.assert_close(out[n][1], out[1][1], rtol=1e-4, atol=1e-5)


def test_dense_matches_full_logits_reference(torch_threads):
    torch_threads(2)
    hs, ht, ws, wt, mask = _inputs(torch.float64)
    z_s, z_t = hs @ ws.t(), ht @ wt.t()
    ref = divergence("generalized_jsd", z_s[mask], z_t[mask], 0.5, reduction="none")
    got = chunked_divergence(
        hs, LMHead(ws), ht, LMHead(wt), "generalized_jsd", 0.5, mask=mask, reduction="none",
        block_size=64,
    )  # fmt: skip
    torch.testing.assert_close(got[mask], ref, rtol=1e-10, atol=1e-12)

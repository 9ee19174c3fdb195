"""ULD's float32 CPU path: partial sort (top ``m`` selected, then sorted) == full sort, and
values/subgradients against float64 references, with ties, zero rows and either side longer
(thread counts: test_cpu_threads.py)."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

import alignment.spans.uld as uld
from alignment.errors import AlignmentError
from alignment.spans.uld import sorted_l1_rows, uld_loss


def _rows(R: int, V: int, seed: int, levels: int | None = None) -> torch.Tensor:
    """float32 non-negative rows: softmax-like spread, optional ties (few distinct values), an
    all-zero row and a row that is half zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.softmax(torch.randn(R, V, generator=g, dtype=torch.float64) * 3, dim=-1)
    if levels is not None:  # many exact ties
        x = torch.round(x / x.max() * levels) / levels
    x = x.float()
    x[0] = 0.0
    x[1, : V // 2] = 0.0
    return x


def _reference(p: torch.Tensor, q: torch.Tensor):
    """float64: per-row ULD, and per row the ascending (value, subgradient) pairs of p and q."""
    p64, q64 = p.double(), q.double()
    n = max(p.shape[-1], q.shape[-1])
    ps = torch.nn.functional.pad(p64.sort(-1).values, (n - p.shape[-1], 0))
    qs = torch.nn.functional.pad(q64.sort(-1).values, (n - q.shape[-1], 0))
    sign = (ps - qs).sign()
    return (ps - qs).abs().sum(-1), (ps, sign), (qs, -sign)


def _pairs(values: torch.Tensor, sign: torch.Tensor, V: int) -> np.ndarray:
    """Rows of (value, sign) sorted lexicographically: the multiset a tie order may permute."""
    out = []
    for v, s in zip(values.double().numpy(), sign.double().numpy(), strict=True):
        order = np.lexsort((s[-V:], v[-V:]))
        out.append(np.stack([v[-V:][order], s[-V:][order]]))
    return np.stack(out)


@pytest.mark.parametrize(("Vp", "Vq"), [(300, 1000), (1000, 300), (500, 500), (1, 40)])
@pytest.mark.parametrize("levels", [None, 7])
def test_fast_path_values_and_subgradients_match_float64(Vp: int, Vq: int, levels) -> None:
    """Loss vs float64; each sign is the subgradient at its element's rank, up to a tie order
    (compared as the multiset of (value, sign) pairs of each row)."""
    p, q = _rows(12, Vp, seed=Vp, levels=levels), _rows(12, Vq, seed=Vq + 1, levels=levels)
    loss, sp, sq = sorted_l1_rows(p, q, grad_p=True, grad_q=True)
    ref, (ps, gp), (qs, gq) = _reference(p, q)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    assert sp is not None and sq is not None and sp.dtype == torch.int8
    np.testing.assert_array_equal(_pairs(p, sp, Vp), _pairs(ps, gp, Vp))
    np.testing.assert_array_equal(_pairs(q, sq, Vq), _pairs(qs, gq, Vq))
    assert loss[0].item() == pytest.approx(q[0].double().sum().item(), rel=1e-5)  # p row is 0


@pytest.mark.parametrize(("Vp", "Vq"), [(200, 900), (900, 200), (64, 64)])
@pytest.mark.parametrize("levels", [None, 5])
def test_partial_sort_equals_full_sort(monkeypatch, Vp: int, Vq: int, levels) -> None:
    """Selecting the top m before sorting gives the same signs (the packed keys are unique, so
    the order is the same) and the same loss up to the rounding of the tail sums."""
    p, q = _rows(10, Vp, seed=3, levels=levels), _rows(10, Vq, seed=4, levels=levels)
    results = {}
    for share in (0.0, 2.0):  # always partial / never partial
        monkeypatch.setattr(uld, "PARTIAL_TAIL", share)
        results[share] = sorted_l1_rows(p, q, grad_p=True, grad_q=True)
    (lp, sp_p, sq_p), (lf, sp_f, sq_f) = results[0.0], results[2.0]
    torch.testing.assert_close(lp, lf, rtol=1e-6, atol=1e-7)
    assert torch.equal(sp_p, sp_f) and torch.equal(sq_p, sq_f)


@pytest.mark.parametrize("need_index", [True, False])
def test_top_ascending_partial_equals_full(need_index: bool) -> None:
    x = _rows(9, 700, seed=5, levels=4).numpy()
    for m in (1, 250, 699, 700):
        # separate scratch slots: each result lives in its slot's buffer
        tp, top_p, idx_p = uld._top_ascending_f32(x, m, need_index, partial=True, slot="a")
        tf, top_f, idx_f = uld._top_ascending_f32(x, m, need_index, partial=False, slot="b")
        np.testing.assert_array_equal(top_p, top_f)
        np.testing.assert_array_equal(top_f, np.sort(x, -1)[:, 700 - m :])
        np.testing.assert_allclose(tp, tf, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(tf, np.sort(x, -1)[:, : 700 - m].sum(-1), rtol=1e-6)
        if need_index:
            top_f = top_f.copy()  # _columns overwrites the keys the values are read from
            cols_p, cols_f = uld._columns(idx_p).numpy(), uld._columns(idx_f).numpy()
            np.testing.assert_array_equal(cols_p, cols_f)
            np.testing.assert_array_equal(np.take_along_axis(x, cols_f, -1), top_f)
        else:
            assert idx_p is None and idx_f is None


def test_float32_partial_path_vs_pot_and_float64_autograd() -> None:
    """uld_loss on float32 rows where the teacher's tail is most of it (the partial path)."""
    p = _rows(5, 400, seed=8).requires_grad_()
    q = _rows(5, 2000, seed=9).requires_grad_()
    loss = uld_loss(p, q, reduction="none")
    for r in range(5):
        u = np.pad(p[r].detach().double().numpy(), (0, 1600))
        w1 = ot.wasserstein_1d(u, q[r].detach().double().numpy(), p=1)
        assert loss[r].item() == pytest.approx(2000 * w1, rel=1e-5, abs=1e-7)
    w = torch.rand(5, generator=torch.Generator().manual_seed(10))
    gp, gq = torch.autograd.grad((loss * w).sum(), (p, q))
    p64, q64 = p.detach().double().requires_grad_(), q.detach().double().requires_grad_()
    ps = torch.nn.functional.pad(p64.sort(-1, descending=True).values, (0, 1600))
    qs = q64.sort(-1, descending=True).values
    rp, rq = torch.autograd.grad(((ps - qs).abs().sum(-1) * w.double()).sum(), (p64, q64))
    # no ties off the zeros here, so the subgradient is unique: equal to float64 autograd
    torch.testing.assert_close(gp.double(), rp)
    torch.testing.assert_close(gq.double(), rq)


def test_scratch_reuse_leaves_earlier_results_intact(monkeypatch) -> None:
    """Results own their memory: a later call (reusing the scratch buffers) changes nothing, and
    fresh buffers (scratch over its size cap) give the same results."""
    p1, q1 = _rows(6, 300, seed=11), _rows(6, 800, seed=12)
    p2, q2 = _rows(6, 300, seed=13), _rows(6, 800, seed=14)
    first = sorted_l1_rows(p1, q1, grad_p=True, grad_q=True)
    kept = [t.clone() for t in first]
    sorted_l1_rows(p2, q2, grad_p=True, grad_q=True)
    assert all(torch.equal(a, b) for a, b in zip(first, kept, strict=True))
    monkeypatch.setattr(uld, "SCRATCH_MAX_BYTES", 0)
    fresh = sorted_l1_rows(p1, q1, grad_p=True, grad_q=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh, kept, strict=True))


@pytest.mark.parametrize(
    ("dtype", "bad"),
    [(torch.float32, -1e-9), (torch.float32, -0.0), (torch.float64, -1e-9)],
)
def test_negative_values_raise_a_clear_error(dtype, bad: float) -> None:
    """The packed keys order non-negative floats only: a negative (or, in float32, -0.0) input
    is refused, not silently mis-sorted (float64 takes the generic path, where -0.0 == 0)."""
    p, q = _rows(3, 50, seed=15).to(dtype), _rows(3, 70, seed=16).to(dtype)
    q[2, 5] = bad
    with pytest.raises(AlignmentError, match=r"non-negative .* row 2 of q \(teacher\)"):
        sorted_l1_rows(p, q, grad_p=True, grad_q=False)
    with pytest.raises(AlignmentError, match="row 2 of q"):
        uld_loss(p, q)

"""alignment.cpu's one pool: each chunk once, torch's own team off in every thread that runs a
chunk and back afterwards, the caller's grad mode, errors raised; and the kernels that run on it
(ULD's sort path, the GOLD/span-ULD row kernel) give identical values and gradients at 1, 2 and 4
torch threads, equal to the float64 / POT references."""

from __future__ import annotations

import threading

import numpy as np
import ot
import pytest
import torch
from gold_reference import ref_uld, reference_terms

import alignment.cpu as cpu
from alignment.spans.gold import gold_terms
from alignment.spans.uld import sorted_l1_rows, uld_loss
from alignment.types import SideLogits

THREADS = (1, 2, 4)


@pytest.fixture
def torch_threads():
    """Set torch's thread count in the test; the count before is restored after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_run_chunks_covers_each_row_once_with_torch_team_off(torch_threads) -> None:
    torch_threads(4)
    seen, lock = [], threading.Lock()

    def fn(rows: slice) -> None:
        inner = []  # a nested call runs in this thread, in order
        cpu.run_chunks(lambda r: inner.append(r), 3, 1, "cpu")
        with lock:
            seen.append((rows, threading.get_ident(), torch.get_num_threads(),
                         torch.is_grad_enabled(), inner))  # fmt: skip

    with torch.no_grad():
        cpu.run_chunks(fn, 37, 5, "cpu")
    rows = sorted(i for sl, *_ in seen for i in range(sl.start, sl.stop))
    assert rows == list(range(37)) and all(sl.stop - sl.start <= 5 for sl, *_ in seen)
    assert len({t for _, t, *_ in seen}) <= 4
    assert not any(grad for *_, grad, _ in seen)  # the caller's no_grad, in every thread
    assert all(inner == [slice(0, 1), slice(1, 2), slice(2, 3)] for *_, inner in seen)
    if cpu._OMP is not None:  # torch's team off while a chunk runs, the caller's back after
        assert {n for _, _, n, *_ in seen} == {1}
    assert torch.get_num_threads() == 4


def test_run_chunks_raises_a_chunks_error(torch_threads) -> None:
    torch_threads(2)

    def fn(rows: slice) -> None:
        if rows.start == 6:
            raise ValueError("chunk 6")

    with pytest.raises(ValueError, match="chunk 6"):
        cpu.run_chunks(fn, 20, 2, "cpu")
    assert torch.get_num_threads() == 2


def _rows(R: int, V: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.softmax(torch.randn(R, V, generator=g, dtype=torch.float64) * 3, dim=-1).float()
    x[1, : V // 3] = 0.0  # zeros: ties with the padding
    return x


def test_sort_path_identical_at_any_thread_count(torch_threads) -> None:
    """``sorted_l1_rows`` / ``uld_loss`` on 70 float32 rows (several chunks of rows at 2 and 4
    threads): bit-identical losses, signs and gradients, equal to POT and float64 autograd."""
    p, q = _rows(70, 300, seed=1), _rows(70, 1100, seed=2)
    w = torch.rand(70, generator=torch.Generator().manual_seed(3))
    results = []
    for n in THREADS:
        torch_threads(n)
        rows = sorted_l1_rows(p, q, grad_p=True, grad_q=True)
        pg, qg = p.clone().requires_grad_(), q.clone().requires_grad_()
        loss = uld_loss(pg, qg, reduction="none")
        results.append((*rows, loss.detach(), *torch.autograd.grad((loss * w).sum(), (pg, qg))))
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))
    loss = results[0][3]
    for r in (0, 1, 69):
        w1 = ot.wasserstein_1d(np.pad(p[r].double().numpy(), (0, 800)), q[r].double().numpy())
        assert loss[r].item() == pytest.approx(1100 * w1, rel=1e-5, abs=1e-7)
    p64, q64 = p.double().requires_grad_(), q.double().requires_grad_()
    ref = ref_uld(p64, q64)
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-7)
    rp, rq = torch.autograd.grad((ref * w.double()).sum(), (p64, q64))
    keep = p64.detach() > 0  # the subgradient at p's zeros (tied with the padding) may differ
    torch.testing.assert_close(results[0][4].double()[keep], rp[keep])
    torch.testing.assert_close(results[0][5].double(), rq)


SPAN_S = torch.tensor([[-1, 0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 6, 7, 8, -1],
                       [-1, -1, 0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9]])  # fmt: skip
SPAN_T = torch.tensor([[-1, 0, 1, 1, 2, 3, 4, 5, 5, 6, 7, 8, 8],
                       [-1, 0, 0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9]])  # fmt: skip


def _sides(Vs: int, Vt: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ls = torch.randn(*SPAN_S.shape, Vs, generator=g, dtype=torch.float64) * 2
    lt = torch.randn(*SPAN_T.shape, Vt, generator=g, dtype=torch.float64) * 2
    ids_s = torch.randint(0, Vs, SPAN_S.shape, generator=g)
    ids_t = torch.randint(0, Vt, SPAN_T.shape, generator=g)
    M = min(Vs, Vt) // 2
    ms, mt = torch.randperm(Vs, generator=g)[:M], torch.randperm(Vt, generator=g)[:M]
    ids_s[0, 2], ids_t[0, 1] = ms[0], mt[0]  # span 0: the anchors are a matched pair
    return (ls, ids_s), (lt, ids_t), ms, mt


@pytest.mark.parametrize("matched", [True, False])
def test_span_kernel_identical_at_any_thread_count(torch_threads, monkeypatch, matched) -> None:
    """GOLD terms (``matched``) and span ULD (no pairs) in float32, one span row per chunk:
    bit-identical values and student-logit gradients at 1, 2 and 4 threads, equal to the
    materialized float64 reference."""
    monkeypatch.setattr("alignment.spans.gold.CHUNK_ELEMS", 1)
    (ls, ids_s), (lt, ids_t), ms, mt = _sides(211, 333, seed=4)
    if not matched:
        ms, mt = ms[:0], mt[:0]
    teacher = SideLogits(lt.float(), ids_t, SPAN_T)
    wm, wu = torch.randn(2, *SPAN_S.shape[:1], 10, generator=torch.Generator().manual_seed(5))
    results = []
    for n in THREADS:
        torch_threads(n)
        x = ls.float().requires_grad_()
        terms = gold_terms(SideLogits(x, ids_s, SPAN_S), teacher, ms, mt, beta=0.4, anchor="last")
        total = (terms.matched_B_S * wm + terms.unmatched_B_S * wu).sum()
        (grad,) = torch.autograd.grad(total, x)
        results.append((terms.matched_B_S.detach(), terms.unmatched_B_S.detach(), grad))
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))
    x64 = ls.clone().requires_grad_()
    ref_m, ref_u, mask = reference_terms(
        SideLogits(x64, ids_s, SPAN_S), SideLogits(lt, ids_t, SPAN_T), ms, mt, 0.4, "last"
    )
    torch.testing.assert_close(results[0][0].double(), ref_m * mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1].double(), ref_u * mask, rtol=1e-5, atol=1e-6)
    ref_total = ((ref_m * wm.double() + ref_u * wu.double()) * mask).sum()
    (ref_grad,) = torch.autograd.grad(ref_total, x64)
    torch.testing.assert_close(results[0][2].double(), ref_grad, rtol=1e-4, atol=1e-6)

"""The row kernel of alignment.spans.gold (_gold_rows): float32/bfloat16 paths, reused buffers, the
huge-page gradient, ties, zero probabilities and rows no span reads, against float64 references."""

from __future__ import annotations

import pytest
import torch
from gold_reference import reference_terms

import alignment.cpu as cpu
from alignment.spans.gold import gold_terms, span_uld_loss
from alignment.types import SideLogits

B, Ts, Tt = 3, 12, 10
SPAN_S = torch.tensor(
    [
        [-1, -1, 0, 0, 1, 2, 2, 2, 3, 4, -1, -1],  # padding at the end
        [-1, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, -1],
        [-1] * Ts,  # a row with no spans (all prompt / padding)
    ]
)
SPAN_T = torch.tensor(
    [
        [-1, -1, 0, 1, 1, 2, 3, 4, -1, -1],
        [-1, 0, 0, 1, 2, 3, 4, 5, 6, 6],
        [-1] * Tt,
    ]
)


def _sides(Vs: int, Vt: int, seed: int, dtype=torch.float64, t_s=1.0, t_t=1.0, levels=None):
    """Random logits (``levels``: integers in ``0 .. levels - 1``, many exact ties), random ids;
    every other span's anchors made a matched pair of ``(ms, mt)``."""
    g = torch.Generator().manual_seed(seed)

    def logits(T: int, V: int) -> torch.Tensor:
        if levels is not None:
            return torch.randint(0, levels, (B, T, V), generator=g).to(torch.float64)
        return torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2

    ls, lt = logits(Ts, Vs).to(dtype), logits(Tt, Vt).to(dtype)
    ids_s, ids_t = (
        torch.randint(0, Vs, (B, Ts), generator=g),
        torch.randint(0, Vt, (B, Tt), generator=g),
    )
    M = min(Vs, Vt) // 2
    ms, mt = torch.randperm(Vs, generator=g)[:M], torch.randperm(Vt, generator=g)[:M]
    for b, k in ((0, 0), (0, 2), (1, 1), (1, 5)):  # "last" anchors of those spans
        ps = int((SPAN_S[b] == k).nonzero().max())
        pt = int((SPAN_T[b] == k).nonzero().max())
        ids_s[b, ps], ids_t[b, pt] = ms[k % M], mt[k % M]
    student = SideLogits(ls.requires_grad_(), ids_s, SPAN_S, t_s)
    return student, SideLogits(lt, ids_t, SPAN_T, t_t), ms, mt


def _as64(side: SideLogits) -> SideLogits:
    x = side.logits_B_T_V.detach().to(torch.float64).requires_grad_()
    return SideLogits(x, side.input_ids_B_T, side.span_B_T, side.temperature)


def _weighted(terms, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wm = torch.randn(terms[0].shape, generator=g, dtype=torch.float64)
    wu = torch.randn(terms[0].shape, generator=g, dtype=torch.float64)
    return (terms[0].double() * wm + terms[1].double() * wu).sum()


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 2e-5), (torch.bfloat16, 2e-5), (torch.float64, 1e-10)]
)
@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0, None])
def test_low_precision_logits_match_float64_reference(monkeypatch, dtype, tol, beta) -> None:
    """float32 (numpy sort path, reused buffers), bfloat16 (upcast while gathering) and float64;
    temperature per side; 2 rows per chunk; values and student-logit gradients. ``beta=None``:
    no vocabulary pairs (pure ULD)."""
    monkeypatch.setattr("alignment.spans.gold.CHUNK_ELEMS", 2 * 301)
    seed = 9 if beta is None else int(beta * 10)
    student, teacher, ms, mt = _sides(257, 301, seed=seed, dtype=dtype, t_s=1.3, t_t=0.6)
    if beta is None:
        beta, ms, mt = 0.5, ms[:0], mt[:0]
    got = gold_terms(student, teacher, ms, mt, beta=beta, anchor="last")
    s64, t64 = _as64(student), _as64(teacher)
    ref_m, ref_u, mask = reference_terms(s64, t64, ms, mt, beta, "last")
    assert torch.equal(got.mask_B_S, mask)
    assert got.matched_B_S.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(got.matched_B_S.double(), ref_m, rtol=tol, atol=tol)
    torch.testing.assert_close(got.unmatched_B_S.double(), ref_u, rtol=tol, atol=tol)
    (g,) = torch.autograd.grad(
        _weighted((got.matched_B_S, got.unmatched_B_S)), student.logits_B_T_V
    )
    (g64,) = torch.autograd.grad(_weighted((ref_m, ref_u)), s64.logits_B_T_V)
    assert g.dtype == dtype
    grad_tol = tol if dtype != torch.bfloat16 else 1e-2  # the gradient is rounded to bfloat16
    torch.testing.assert_close(g.double(), g64, rtol=grad_tol, atol=grad_tol)


def _tie_group_sums(grad_B_T_V: torch.Tensor, logits_B_T_V: torch.Tensor, levels: int):
    """[B, T, levels] gradient summed over the entries of each row that share a logit value."""
    idx = logits_B_T_V.detach().long()
    out = torch.zeros(*grad_B_T_V.shape[:2], levels, dtype=torch.float64)
    return out.scatter_add_(-1, idx, grad_B_T_V.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_values_and_tie_invariant_gradients(dtype) -> None:
    """Logits in {0, 1, 2}: thousands of exactly tied probabilities per row. Which of two tied
    entries takes which rank is arbitrary, so the gradient is compared summed over each tie
    group (invariant under any tie order); the loss itself must match exactly."""
    student, teacher, _, _ = _sides(400, 520, seed=3, dtype=dtype, t_s=0.9, levels=3)
    got = span_uld_loss(student, teacher, anchor="first", reduction="sum")
    s64, t64 = _as64(student), _as64(teacher)
    none = torch.tensor([], dtype=torch.long)
    _, ref_u, _ = reference_terms(s64, t64, none, none, 0.5, "first")
    torch.testing.assert_close(got.double(), ref_u.sum(), rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(got, student.logits_B_T_V)
    (g64,) = torch.autograd.grad(ref_u.sum(), s64.logits_B_T_V)
    torch.testing.assert_close(
        _tie_group_sums(g, student.logits_B_T_V, 3),
        _tie_group_sums(g64, s64.logits_B_T_V, 3),
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_probabilities_and_unread_rows(dtype) -> None:
    """-inf logits (probability exactly 0) in unmatched columns, and NaN in every row no span
    reads (prompt, padding, the row with no spans, the last position): the loss is the reference
    on the clean rows, finite, and those rows get a zero gradient."""
    student, teacher, ms, mt = _sides(97, 131, seed=4, dtype=dtype)
    free_s = torch.ones(97, dtype=torch.bool)
    free_t = torch.ones(131, dtype=torch.bool)
    free_s[ms], free_t[mt] = False, False
    free_s[student.input_ids_B_T.reshape(-1)] = False  # sampled tokens have probability > 0
    free_t[teacher.input_ids_B_T.reshape(-1)] = False
    ls, lt = student.logits_B_T_V.detach().clone(), teacher.logits_B_T_V.clone()
    ls[..., free_s.nonzero()[:5, 0]] = float("-inf")
    lt[..., free_t.nonzero()[:9, 0]] = float("-inf")
    read_s = _read_rows(SPAN_S)
    read_t = _read_rows(SPAN_T)
    dirty_s, dirty_t = ls.clone(), lt.clone()
    dirty_s[~read_s] = float("nan")
    dirty_t[~read_t] = float("nan")
    x = dirty_s.requires_grad_()
    s = SideLogits(x, student.input_ids_B_T, SPAN_S)
    t = SideLogits(dirty_t, teacher.input_ids_B_T, SPAN_T)
    got = gold_terms(s, t, ms, mt, beta=0.5, anchor="first")
    s64 = SideLogits(ls.double().requires_grad_(), student.input_ids_B_T, SPAN_S)
    t64 = SideLogits(lt.double(), teacher.input_ids_B_T, SPAN_T)
    ref_m, ref_u, _ = reference_terms(s64, t64, ms, mt, 0.5, "first")
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.matched_B_S.double(), ref_m, rtol=tol, atol=tol)
    torch.testing.assert_close(got.unmatched_B_S.double(), ref_u, rtol=tol, atol=tol)
    (g,) = torch.autograd.grad(_weighted((got.matched_B_S, got.unmatched_B_S)), x)
    (g64,) = torch.autograd.grad(_weighted((ref_m, ref_u)), s64.logits_B_T_V)
    assert bool(torch.isfinite(g).all()) and bool((g[~read_s] == 0).all())
    torch.testing.assert_close(g.double(), g64, rtol=tol, atol=tol)


def _read_rows(span_B_T: torch.Tensor) -> torch.Tensor:
    """bool [B, T]: the logits rows that predict a token in a span."""
    read = torch.zeros(span_B_T.shape, dtype=torch.bool)
    read[:, :-1] = span_B_T[:, 1:] >= 0
    return read


def test_huge_page_gradient_is_an_ordinary_tensor(monkeypatch) -> None:
    """With every fresh tensor on huge pages: the same values and gradients, gradients that
    accumulate over two backward calls, and a gradient an SGD step and zeroing can use."""
    student, teacher, ms, mt = _sides(257, 301, seed=5, dtype=torch.float32)
    terms = gold_terms(student, teacher, ms, mt, beta=0.5)
    (want,) = torch.autograd.grad(_weighted((terms.matched_B_S, terms.unmatched_B_S)),
                                  student.logits_B_T_V)  # fmt: skip
    monkeypatch.setattr(cpu, "HUGE_MIN_BYTES", 0)
    x = student.logits_B_T_V
    for _ in range(2):  # the second backward adds into x.grad
        terms = gold_terms(student, teacher, ms, mt, beta=0.5)
        _weighted((terms.matched_B_S, terms.unmatched_B_S)).backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, 2 * want)
    before = x.detach().clone()
    with torch.no_grad():  # an SGD step, and the zeroing an optimizer does between steps
        x.add_(x.grad, alpha=-0.1)
    x.grad.zero_()
    torch.testing.assert_close(x.detach(), before - 0.2 * want)
    assert bool((x.grad == 0).all())
    a = cpu.fresh_empty((64, 1000), torch.float32, "cpu")  # HUGE_MIN_BYTES is 0 here
    b = cpu.fresh_empty((64, 1000), torch.float32, "cpu")
    a.fill_(1.0)
    b.fill_(2.0)
    assert a.is_contiguous() and a.shape == (64, 1000) and bool((a == 1).all())
    assert a.data_ptr() % (1 << 21) == 0 or cpu._MADV_HUGEPAGE is None


def test_reused_buffers_leave_earlier_results_intact() -> None:
    """Outputs and gradients of one call are not views of the per-thread buffers: a later call
    with other shapes and dtypes leaves them unchanged."""
    student, teacher, ms, mt = _sides(300, 420, seed=6, dtype=torch.float32)
    first = gold_terms(student, teacher, ms, mt, beta=0.3)
    (g_first,) = torch.autograd.grad(first.unmatched_B_S.sum() + first.matched_B_S.sum(),
                                     student.logits_B_T_V)  # fmt: skip
    kept = (first.matched_B_S.clone(), first.unmatched_B_S.clone(), g_first.clone())
    other_s, other_t, oms, omt = _sides(520, 380, seed=7, dtype=torch.float32)
    other = gold_terms(other_s, other_t, oms, omt, beta=0.3)
    torch.autograd.grad(other.unmatched_B_S.sum(), other_s.logits_B_T_V)
    span_uld_loss(*_sides(64, 80, seed=8, dtype=torch.float64)[:2]).backward()
    torch.testing.assert_close(first.matched_B_S, kept[0], rtol=0, atol=0)
    torch.testing.assert_close(first.unmatched_B_S, kept[1], rtol=0, atol=0)
    torch.testing.assert_close(g_first, kept[2], rtol=0, atol=0)

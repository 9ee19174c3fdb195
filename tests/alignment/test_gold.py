"""GOLD-style and span-ULD losses against float64 autograd references built from the definitions."""

from __future__ import annotations

import math

import pytest
import torch
from gold_reference import reference_terms

from alignment.errors import AlignmentError
from alignment.spans.chain_rule import span_anchor_positions
from alignment.spans.gold import gold_loss, gold_terms, span_uld_loss
from alignment.types import SideLogits
from onpolicy.losses.divergences import generalized_jsd

B, Ts, Tt, Vs, Vt = 2, 10, 8, 23, 31
SPAN_S = torch.tensor([[-1, -1, 0, 0, 1, 2, 2, 2, 3, -1], [-1, 0, 1, 1, 2, 3, 3, 4, -1, -1]])
SPAN_T = torch.tensor([[-1, -1, 0, 1, 1, 2, 3, -1], [-1, 0, 0, 1, 2, 3, 4, 4]])


def _sides(seed: int, requires_grad: bool = True, t_s: float = 1.0, t_t: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    ls = (torch.randn(B, Ts, Vs, generator=g, dtype=torch.float64) * 2).requires_grad_(
        requires_grad
    )
    lt = torch.randn(B, Tt, Vt, generator=g, dtype=torch.float64) * 2
    ids_s = torch.randint(0, Vs, (B, Ts), generator=g)
    ids_t = torch.randint(0, Vt, (B, Tt), generator=g)
    return SideLogits(ls, ids_s, SPAN_S, t_s), SideLogits(lt, ids_t, SPAN_T, t_t)


def _matched(M: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(Vs, generator=g)[:M], torch.randperm(Vt, generator=g)[:M]


def _pair_some_anchors(student, teacher, ms, mt, anchor):
    """Make every other span's teacher anchor the matched partner of the student's anchor, so
    both kinds of span (anchors a matched pair or not) occur."""
    S = int(SPAN_S.max()) + 1
    pos_s, ok_s = span_anchor_positions(student.span_B_T, anchor, S)
    pos_t, ok_t = span_anchor_positions(teacher.span_B_T, anchor, S)
    ids_s, ids_t = student.input_ids_B_T.clone(), teacher.input_ids_B_T.clone()
    for b in range(B):
        for k in range(0, S, 2):
            if ok_s[b, k] and ok_t[b, k]:
                i = (b + k) % len(ms)
                ids_s[b, pos_s[b, k]], ids_t[b, pos_t[b, k]] = ms[i], mt[i]
    return (
        SideLogits(student.logits_B_T_V, ids_s, student.span_B_T, student.temperature),
        SideLogits(teacher.logits_B_T_V, ids_t, teacher.span_B_T, teacher.temperature),
    )


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("anchor", ["first", "last"])
def test_gold_terms_match_float64_reference_values_and_grads(beta, anchor) -> None:
    student, teacher = _sides(1, t_s=1.3, t_t=0.7)
    ms, mt = _matched(9)
    student, teacher = _pair_some_anchors(student, teacher, ms, mt, anchor)
    got = gold_terms(student, teacher, ms, mt, beta=beta, anchor=anchor)
    ref_m, ref_u, mask = reference_terms(student, teacher, ms, mt, beta, anchor)
    assert torch.equal(got.mask_B_S, mask)
    torch.testing.assert_close(got.matched_B_S, ref_m)
    torch.testing.assert_close(got.unmatched_B_S, ref_u)
    g = torch.Generator().manual_seed(5)
    wm, wu = torch.randn(mask.shape, generator=g), torch.randn(mask.shape, generator=g)
    x = student.logits_B_T_V
    (g1,) = torch.autograd.grad((got.matched_B_S * wm + got.unmatched_B_S * wu).sum(), x)
    (g2,) = torch.autograd.grad((ref_m * wm + ref_u * wu).sum(), x)
    torch.testing.assert_close(g1, g2)


def test_span_uld_loss_matches_reference_and_reductions() -> None:
    student, teacher = _sides(2)
    none = torch.tensor([], dtype=torch.long)
    _, ref_u, mask = reference_terms(student, teacher, none, none, 0.5, "first")
    got = span_uld_loss(student, teacher, reduction="none")
    torch.testing.assert_close(got, ref_u)
    torch.testing.assert_close(span_uld_loss(student, teacher, reduction="sum"), ref_u.sum())
    mean = span_uld_loss(student, teacher)
    torch.testing.assert_close(mean, ref_u.sum() / mask.sum())
    (g1,) = torch.autograd.grad(mean, student.logits_B_T_V)
    (g2,) = torch.autograd.grad(ref_u.sum() / mask.sum(), student.logits_B_T_V)
    torch.testing.assert_close(g1, g2)


def test_gold_loss_weights_and_float32_inputs() -> None:
    student, teacher = _sides(3, requires_grad=False)
    ms, mt = _matched(12)
    terms = gold_terms(student, teacher, ms, mt, beta=0.5)
    want = (0.25 * terms.matched_B_S + 2.0 * terms.unmatched_B_S).sum() / terms.mask_B_S.sum()
    got = gold_loss(student, teacher, ms, mt, 0.5, matched_weight=0.25, unmatched_weight=2.0)
    torch.testing.assert_close(got, want)
    s32 = SideLogits(student.logits_B_T_V.float(), student.input_ids_B_T, SPAN_S)
    t32 = SideLogits(teacher.logits_B_T_V.float(), teacher.input_ids_B_T, SPAN_T)
    got32 = gold_loss(s32, t32, ms, mt, 0.5, matched_weight=0.25, unmatched_weight=2.0)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-6)


def test_topk_unmatched_is_exact_at_full_k_and_a_lower_bound_below() -> None:
    student, teacher = _sides(4)
    ms, mt = _matched(5)
    exact = gold_terms(student, teacher, ms, mt, top_k=None).unmatched_B_S
    full = gold_terms(student, teacher, ms, mt, top_k=max(Vs, Vt))
    torch.testing.assert_close(full.unmatched_B_S, exact)
    (g1,) = torch.autograd.grad(full.unmatched_B_S.sum(), student.logits_B_T_V)
    (g2,) = torch.autograd.grad(exact.sum(), student.logits_B_T_V)
    torch.testing.assert_close(g1, g2)
    approx = gold_terms(student, teacher, ms, mt, top_k=3).unmatched_B_S
    assert torch.all(approx <= exact + 1e-12) and bool((approx < exact).any())


def test_identical_tokenizers_reduce_to_same_vocab_jsd() -> None:
    """Same vocab, every token its own span, all ids matched: GOLD == onpolicy's GJSD per token."""
    g = torch.Generator().manual_seed(6)
    T, V = 9, 40
    ls = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    lt = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=g)
    span = torch.arange(T).expand(B, T) - 3  # prompt = tokens 0..2 -> span -1
    span = torch.where(span >= 0, span, -1)
    all_ids = torch.arange(V)
    for beta in (0.0, 0.5, 1.0):
        got = gold_loss(SideLogits(ls, ids, span), SideLogits(lt, ids, span), all_ids, all_ids,
                        beta=beta)  # fmt: skip
        pred = span[:, 1:] >= 0  # logits at t - 1 predict token t
        ref = generalized_jsd(ls[:, :-1], lt[:, :-1], beta=beta, mask=pred)
        torch.testing.assert_close(got, ref)
        terms = gold_terms(SideLogits(ls, ids, span), SideLogits(lt, ids, span), all_ids, all_ids)
        assert torch.all(terms.unmatched_B_S == 0)


def test_identical_distributions_give_zero() -> None:
    student, _ = _sides(7)
    same = SideLogits(student.logits_B_T_V.detach(), student.input_ids_B_T, SPAN_S)
    ids = torch.arange(Vs)
    loss = gold_loss(student, same, ids[:7], ids[:7])
    assert abs(loss.item()) < 1e-12
    assert span_uld_loss(student, same).item() == 0.0


def test_all_masked_is_zero_with_zero_grad() -> None:
    student, teacher = _sides(8)
    none_s = SideLogits(student.logits_B_T_V, student.input_ids_B_T, torch.full((B, Ts), -1))
    none_t = SideLogits(teacher.logits_B_T_V, teacher.input_ids_B_T, torch.full((B, Tt), -1))
    ms, mt = _matched(4)
    loss = gold_loss(none_s, none_t, ms, mt)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, student.logits_B_T_V)
    assert torch.all(grad == 0)


def test_bad_inputs_raise_clear_errors() -> None:
    student, teacher = _sides(9)
    ms, mt = _matched(4)
    with pytest.raises(AlignmentError, match="beta"):
        gold_loss(student, teacher, ms, mt, beta=1.5)
    with pytest.raises(AlignmentError, match="same length"):
        gold_loss(student, teacher, ms, mt[:3])
    with pytest.raises(AlignmentError, match="matched teacher ids"):
        gold_loss(student, teacher, ms, mt + Vt)
    with pytest.raises(AlignmentError, match="token 0"):
        span_uld_loss(SideLogits(student.logits_B_T_V, student.input_ids_B_T,
                                 torch.zeros(B, Ts, dtype=torch.long)), teacher)  # fmt: skip
    with pytest.raises(AlignmentError, match="temperature"):
        span_uld_loss(SideLogits(student.logits_B_T_V, student.input_ids_B_T, SPAN_S, 0.0), teacher)
    with pytest.raises(AlignmentError, match="top_k"):
        span_uld_loss(student, teacher, top_k=0)


def test_chunked_rows_give_the_same_values_and_grads(monkeypatch) -> None:
    student, teacher = _sides(10)
    ms, mt = _matched(6)
    whole = gold_terms(student, teacher, ms, mt, beta=0.4)
    (g_whole,) = torch.autograd.grad(
        (whole.matched_B_S + 3 * whole.unmatched_B_S).sum(), student.logits_B_T_V
    )
    monkeypatch.setattr("alignment.spans.gold.CHUNK_ELEMS", 2 * Vt)  # 2 span rows per chunk
    part = gold_terms(student, teacher, ms, mt, beta=0.4)
    (g_part,) = torch.autograd.grad(
        (part.matched_B_S + 3 * part.unmatched_B_S).sum(), student.logits_B_T_V
    )
    torch.testing.assert_close(part.matched_B_S, whole.matched_B_S)
    torch.testing.assert_close(part.unmatched_B_S, whole.unmatched_B_S)
    torch.testing.assert_close(g_part, g_whole)


def test_hand_computed_one_span() -> None:
    """One 1:1 span; student probs [0.8, 0.2], teacher [0.5, 0.3, 0.2] (logits = log probs)."""
    ls = torch.log(torch.tensor([[[0.8, 0.2], [0.5, 0.5]]], dtype=torch.float64))
    lt = torch.log(torch.tensor([[[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]]], dtype=torch.float64))
    span = torch.tensor([[-1, 0]])
    s = SideLogits(ls, torch.tensor([[0, 0]]), span)
    t = SideLogits(lt, torch.tensor([[0, 2]]), span)  # the anchors are the matched pair
    # ULD: |0.8 - 0.5| + |0.2 - 0.3| + |0 - 0.2| = 0.6
    torch.testing.assert_close(span_uld_loss(s, t), torch.tensor(0.6, dtype=torch.float64))
    # student id 0 <-> teacher id 2 matched; reverse KL part: 0.8 log(0.8 / 0.2) - 0.8 + 0.2
    loss = gold_loss(s, t, torch.tensor([0]), torch.tensor([2]), beta=1.0)
    # rest: [0, 0.2] vs [0.5, 0.3, 0] -> sorted |0.2 - 0.5| + |0 - 0.3| = 0.6
    want = 0.8 * math.log(4.0) - 0.6 + 0.6
    torch.testing.assert_close(loss, torch.tensor(want, dtype=torch.float64))


def test_merged_student_token_is_compared_with_the_teacher_span_not_its_first_char() -> None:
    """Student vocab {0: "a", 1: "b", 2: "ab"} writes "ab" as one token, the char teacher as "a"
    "b"; matched pairs a<->a, b<->b. Both give the span "ab" probability 0.9, so the span's
    GJSD is 0 and nothing pushes P_student("ab") down. (Comparing the vocabulary pairs here
    compares P_s("a" alone) with P_t("a" then "b"), and the loss drove a BPE student onto
    single-character tokens.)"""
    ls = torch.log(torch.tensor([[[0.05, 0.05, 0.9], [1 / 3, 1 / 3, 1 / 3]]], dtype=torch.float64))
    ls.requires_grad_(True)
    lt = torch.log(torch.tensor([[[0.9, 0.1], [1e-300, 1.0], [0.5, 0.5]]], dtype=torch.float64))
    s = SideLogits(ls, torch.tensor([[0, 2]]), torch.tensor([[-1, 0]]))
    t = SideLogits(lt, torch.tensor([[0, 0, 1]]), torch.tensor([[-1, 0, 0]]))
    ms, mt = torch.tensor([0, 1]), torch.tensor([0, 1])
    terms = gold_terms(s, t, ms, mt, beta=1.0)
    torch.testing.assert_close(terms.matched_B_S, torch.zeros(1, 1, dtype=torch.float64))
    # the alternatives by ULD: student [0.05, 0.05] vs teacher [0.1] (first char "b")
    torch.testing.assert_close(terms.unmatched_B_S, torch.full((1, 1), 0.1, dtype=torch.float64))
    (grad,) = torch.autograd.grad(gold_loss(s, t, ms, mt, beta=1.0), ls)
    assert abs(float(grad[0, 0, 2])) < 1e-12

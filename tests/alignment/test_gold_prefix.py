"""GOLD with prefix-marginal pairs: a float64 reference from the definition (values, gradients),
a hand-computed span, identical sides give 0, and the merged-token case that motivated it."""

from __future__ import annotations

import math

import pytest
import torch

from alignment.divergence import gjsd_measure
from alignment.spans.gold import gold_prefix_loss, gold_prefix_terms, gold_terms
from alignment.tokens.byte_trie import trie_from_bytes
from alignment.types import SideLogits

S_VOCAB = [b"", b"a", b"b", b"ab", b"ba", b"aba", b"bb"]  # id 0: the stop token (no bytes)
T_VOCAB = [b"", b"a", b"b", b"ab"]
PAIRS_S = torch.tensor([0, 1, 2, 3])  # same bytes on both sides (the stop matched by role)
PAIRS_T = torch.tensor([0, 1, 2, 3])
# student "ab" "a" | stop ; teacher "a" "b" "a" | stop  -> spans: "ab", "a", stop
S_IDS = torch.tensor([[1, 3, 1, 0]])
S_SPAN = torch.tensor([[-1, 0, 1, 2]])
T_IDS = torch.tensor([[1, 1, 2, 1, 0]])
T_SPAN = torch.tensor([[-1, 0, 0, 1, 2]])


def _sides(seed: int):
    g = torch.Generator().manual_seed(seed)
    s = (2 * torch.randn(1, 4, len(S_VOCAB), generator=g, dtype=torch.float64)).requires_grad_()
    t = 2 * torch.randn(1, 5, len(T_VOCAB), generator=g, dtype=torch.float64)
    return SideLogits(s, S_IDS, S_SPAN), SideLogits(t, T_IDS, T_SPAN)


def _prefix(p: torch.Tensor, vocab: list[bytes], beta: bytes):
    if not beta:
        return p[vocab.index(b"")]
    return sum(p[i] for i, w in enumerate(vocab) if w.startswith(beta))


def _ref_gjsd(a, b, beta):
    def kl(p, q):
        return sum(pi * torch.log(pi / qi) - pi + qi for pi, qi in zip(p, q, strict=True))

    if beta == 0:
        return kl(b, a)
    if beta == 1:
        return kl(a, b)
    m = [beta * bi + (1 - beta) * ai for ai, bi in zip(a, b, strict=True)]
    return beta * kl(b, m) + (1 - beta) * kl(a, m)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_matched_term_matches_the_definition_values_and_grads(beta):
    s, t = _sides(0)
    terms = gold_prefix_terms(
        s, t, trie_from_bytes(S_VOCAB), trie_from_bytes(T_VOCAB), PAIRS_S, PAIRS_T, beta
    )
    # span starts: student rows 0, 1, 2 (tokens 1, 2, 3); teacher rows 0, 2, 3
    ref = []
    for rs, rt in ((0, 0), (1, 2), (2, 3)):
        ps, pt = s.logits_B_T_V[0, rs].softmax(-1), t.logits_B_T_V[0, rt].softmax(-1)
        a = [_prefix(ps, S_VOCAB, S_VOCAB[i]) for i in PAIRS_S.tolist()]
        b = [_prefix(pt, T_VOCAB, T_VOCAB[i]) for i in PAIRS_T.tolist()]
        ref.append(_ref_gjsd(a, b, beta))
    ref = torch.stack(ref)
    torch.testing.assert_close(terms.matched_B_S[0], ref)
    (g,) = torch.autograd.grad(terms.matched_B_S.sum(), s.logits_B_T_V, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref.sum(), s.logits_B_T_V)
    torch.testing.assert_close(g, g_ref)
    base = gold_terms(s, t, PAIRS_S, PAIRS_T, beta)  # the ULD part is gold_terms'
    torch.testing.assert_close(terms.unmatched_B_S, base.unmatched_B_S)


def test_hand_computed_pair_is_the_prefix_marginal():
    """Student P: stop .1, a .1, b .2, ab .3, ba .1, aba .1, bb .1 -> M(a) = .5, M(b) = .4,
    M(ab) = .3; a char teacher (.1, .6, .3, 0) -> M(a) = .6, M(b) = .3, M(ab) = 0 (no token)."""
    ps = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.1, 0.1, 0.1], dtype=torch.float64)
    pt = torch.tensor([0.1, 0.6, 0.3, 1e-300], dtype=torch.float64)
    s = SideLogits(
        ps.log().expand(1, 2, 7).clone(), torch.tensor([[1, 1]]), torch.tensor([[-1, 0]])
    )
    t = SideLogits(
        pt.log().expand(1, 2, 4).clone(), torch.tensor([[1, 1]]), torch.tensor([[-1, 0]])
    )
    tries = trie_from_bytes(S_VOCAB), trie_from_bytes(T_VOCAB)
    pairs = torch.tensor([0, 1, 2])
    terms = gold_prefix_terms(s, t, *tries, pairs, pairs, beta=1.0)
    a, b = (0.1, 0.5, 0.4), (0.1, 0.6, 0.3)
    want = sum(x * math.log(x / y) - x + y for x, y in zip(a, b, strict=True))
    assert float(terms.matched_B_S[0, 0]) == pytest.approx(want, abs=1e-12)


def test_identical_sides_give_zero():
    s, _ = _sides(1)
    t = SideLogits(s.logits_B_T_V.detach().clone(), S_IDS, S_SPAN)
    trie = trie_from_bytes(S_VOCAB)
    ids = torch.arange(len(S_VOCAB))
    loss = gold_prefix_loss(s, t, trie, trie, ids, ids, beta=0.5)
    (g,) = torch.autograd.grad(loss, s.logits_B_T_V)
    assert float(loss) == pytest.approx(0.0, abs=1e-12) and float(g.abs().max()) < 1e-12


def test_zero_masses_count_zero_with_finite_gradients():
    la = torch.tensor([[0.0, -math.inf, -1.0]], dtype=torch.float64, requires_grad=True)
    lb = torch.tensor([[-math.inf, -2.0, -1.0]], dtype=torch.float64)
    for beta in (0.0, 0.3, 1.0):
        (g,) = torch.autograd.grad(gjsd_measure(la, lb, beta).sum(), la)
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_a_zero_prefix_mass_has_finite_gradients(beta):
    # a pair whose prefix mass is exactly 0 in float64 (tokens far below the cumulative sum's
    # resolution, as in a 262k vocabulary): log 0 = -inf must not send NaN into the gradient
    s, t = _sides(3)
    with torch.no_grad():
        s.logits_B_T_V[..., 3] = -1000.0  # "ab"
        s.logits_B_T_V[..., 5] = -1000.0  # "aba": nothing else starts with "ab"
    tries = trie_from_bytes(S_VOCAB), trie_from_bytes(T_VOCAB)
    loss = gold_prefix_loss(s, t, *tries, PAIRS_S, PAIRS_T, beta=beta)
    (g,) = torch.autograd.grad(loss, s.logits_B_T_V)
    assert torch.isfinite(loss) and torch.isfinite(g).all()


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_mixed_beta_matches_the_positive_measure_definition(beta):
    """0 < beta < 1 (the fused path, its ``- p + q`` terms cancelled) equals the definition
    beta KL(b || m) + (1 - beta) KL(a || m), KL(p || q) = sum p log(p / q) - p + q, with zero masses
    on either side and on both; values and gradients against float64 autograd."""
    g = torch.Generator().manual_seed(0)
    la = torch.randn(4, 50, generator=g, dtype=torch.float64) - 3
    lb = torch.randn(4, 50, generator=g, dtype=torch.float64) - 3
    la[0, :5], lb[0, 3:8], la[1, 10:12], lb[1, 10:12] = -math.inf, -math.inf, -math.inf, -math.inf
    la.requires_grad_(True)
    a, b = la.exp(), lb.exp()
    m = beta * b + (1 - beta) * a

    def kl(p, q):
        pos = p > 0
        lp, lq = p.clamp(min=1e-300).log(), q.clamp(min=1e-300).log()
        return (torch.where(pos, p * (lp - lq), 0.0) - p + q).sum(-1)

    want = beta * kl(b, m) + (1 - beta) * kl(a, m)
    got = gjsd_measure(la, lb, beta)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    (g_got,) = torch.autograd.grad(got.sum(), la)
    (g_want,) = torch.autograd.grad(want.sum(), la)
    assert torch.isfinite(g_got).all()
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-14)

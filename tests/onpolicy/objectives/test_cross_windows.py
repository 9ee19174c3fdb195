"""The cross objectives' one-sequence layout (``flat_window``) gives the per-span terms of the
per-row windows (values and gradients, random logits on real alignments of two tiny models with
different tokenizers); the chunked reference KL and teacher token log-probs against dense float64
references; the spare-row view."""

from __future__ import annotations

import pytest
import torch
from tiny_cross_pair import scored_cross_pair

import alignment.spans._byte_mass as byte_mass
import onpolicy.objectives.reference as reference_mod
from alignment import SideLogits, byte_trie, gjsd_measure, gold_prefix_terms, gold_terms
from alignment.spans._byte_mass import matched_prefix_gjsd, prefix_logmass
from alignment.spans.next_byte import next_byte_terms
from onpolicy.forward import spare_row_empty
from onpolicy.forward import with_spare_row as spare
from onpolicy.losses import token_logprobs_chunked
from onpolicy.objectives.cross import flat_window
from onpolicy.objectives.reference import reference_kl_sum


@pytest.fixture(scope="module")
def scored():
    pair = scored_cross_pair(seed=3, mode="cross")
    return pair.rollout, pair.scores.cross, len(pair.student_tokenizer)


def _row_window(logits_N_V, last_prompt_B, completion_ids_B, span_B, tau):
    """The per-row layout (the objectives' layout before ``flat_window``): row ``b`` =
    ``[x_b, c_0, ...]``, ``logits[b, j]`` predicts ``c_j``, zero-padded."""
    lengths = [len(c) for c in completion_ids_B]
    B, V, T = len(lengths), logits_N_V.shape[-1], 1 + max(lengths)
    rows = torch.split(logits_N_V, lengths)
    logits = torch.stack(
        [torch.cat([r, r.new_zeros(T - r.shape[0], V)]) for r in rows]
    )  # (B, T, V), built with differentiable ops
    ids = torch.zeros(B, T, dtype=torch.long)
    span = torch.full((B, T), -1, dtype=torch.long)
    for b, c in enumerate(completion_ids_B):
        ids[b, 0] = last_prompt_B[b]
        ids[b, 1 : len(c) + 1] = torch.tensor(c)
        span[b, 1 : len(c) + 1] = span_B[b]
    return SideLogits(logits, ids, span, tau)


def _sides(ro, cross, Vs, flat: bool, s_logits, t_logits):
    if flat:
        s = flat_window(s_logits, ro.prompt_ids_B[0][-1], ro.completion_ids_B,
                        cross.student_span_B, cross.num_spans_B, 1.3)  # fmt: skip
        t = flat_window(t_logits, cross.prompt_ids_B[0][-1], cross.completion_ids_B,
                        cross.teacher_span_B, cross.num_spans_B, 0.8)  # fmt: skip
        return s, t
    s = _row_window(s_logits, [p[-1] for p in ro.prompt_ids_B], ro.completion_ids_B,
                    cross.student_span_B, 1.3)  # fmt: skip
    t = _row_window(t_logits, [p[-1] for p in cross.prompt_ids_B], cross.completion_ids_B,
                    cross.teacher_span_B, 0.8)  # fmt: skip
    return s, t


def _loss(kind: str, s: SideLogits, t: SideLogits, cross) -> torch.Tensor:
    ms, mt = cross.matched_student_ids_M, cross.matched_teacher_ids_M
    if kind == "next_byte":
        tries = (
            byte_trie(cross.student_tokenizer, s.logits_B_T_V.shape[-1]),
            byte_trie(cross.teacher_tokenizer, t.logits_B_T_V.shape[-1]),
        )
        return next_byte_terms(s, t, *tries, beta=0.5).divergence_E.sum()
    if kind == "gold_prefix":
        tries = (
            byte_trie(cross.student_tokenizer, s.logits_B_T_V.shape[-1]),
            byte_trie(cross.teacher_tokenizer, t.logits_B_T_V.shape[-1]),
        )
        terms = gold_prefix_terms(s, t, *tries, ms, mt, beta=0.5)
    else:
        terms = gold_terms(s, t, ms, mt, beta=1.0 if kind == "gold_token" else 0.5)
    m = terms.mask_B_S
    return terms.matched_B_S[m].sum() + 0.7 * terms.unmatched_B_S[m].sum()


@pytest.mark.parametrize("kind", ["gold_prefix", "gold_token", "next_byte"])
def test_one_sequence_layout_equals_per_row_windows(kind, scored):
    ro, cross, Vs = scored
    g = torch.Generator().manual_seed(0)
    Ns, Nt = sum(map(len, ro.completion_ids_B)), cross.logits_Nt_V.shape[0]
    s0 = (torch.randn(Ns, Vs, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    t0 = torch.randn(Nt, cross.logits_Nt_V.shape[1], generator=g, dtype=torch.float64) * 3
    values, grads = [], []
    for flat in (True, False):
        s_side, t_side = _sides(ro, cross, Vs, flat, s0, t0)
        value = _loss(kind, s_side, t_side, cross)
        (grad,) = torch.autograd.grad(value, s0)
        values.append(value.detach())
        grads.append(grad)
    assert values[0].abs() > 1e-3
    torch.testing.assert_close(values[0], values[1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)


def test_reference_kl_chunks_equal_dense_float64(monkeypatch):
    monkeypatch.setattr(reference_mod, "CHUNK_ELEMS", 3 * 50)  # 3 rows per chunk: several chunks
    g = torch.Generator().manual_seed(1)
    s_W_V = torch.randn(11, 50, generator=g).requires_grad_(True)
    rows = torch.tensor([0, 2, 3, 4, 7, 8, 10])
    r = torch.randn(7, 50, generator=g)
    got = reference_kl_sum(s_W_V, rows, r, temperature=1.7)
    (grad,) = torch.autograd.grad(got, s_W_V)
    s64 = s_W_V.detach().double().requires_grad_(True)
    ls = torch.log_softmax(s64[rows] / 1.7, -1)
    want = (ls.exp() * (ls - torch.log_softmax(r.double() / 1.7, -1))).sum()
    (want_grad,) = torch.autograd.grad(want, s64)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), want_grad, rtol=1e-4, atol=1e-6)
    same = reference_kl_sum(s_W_V, rows, s_W_V.detach()[rows], 1.0)
    assert abs(float(same.detach())) < 1e-5  # the student against itself
    assert float(reference_kl_sum(s_W_V, rows[:0], r[:0])) == 0.0  # nothing compared


def test_chunked_teacher_token_logprobs_equal_log_softmax():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(9, 40, generator=g) * 4
    t = torch.randint(0, 40, (9,), generator=g)
    want = torch.log_softmax(z.double(), -1).gather(1, t[:, None]).squeeze(1)
    got = token_logprobs_chunked(z, t, chunk_elems=2 * 40)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_spare_row_is_a_view_only_when_the_storage_has_room():
    x = spare_row_empty(4, 6, like=torch.zeros(1)).copy_(torch.randn(4, 6))
    v = spare(x)
    assert v.shape == (5, 6) and v.data_ptr() == x.data_ptr() and float(v[4].abs().sum()) == 0
    y = torch.randn(4, 6)
    w = spare(y)
    assert w.data_ptr() != y.data_ptr() and torch.equal(w[:4], y) and float(w[4].abs().sum()) == 0
    z = torch.randn(6, 4).T  # not contiguous: a copy
    assert spare(z).data_ptr() != z.data_ptr()


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_matched_prefix_gjsd_chunks_equal_the_unchunked_form(beta, scored, monkeypatch):
    _, cross, Vs = scored
    Vt = cross.logits_Nt_V.shape[1]
    s_trie, t_trie = byte_trie(cross.student_tokenizer, Vs), byte_trie(cross.teacher_tokenizer, Vt)
    ms, mt = cross.matched_student_ids_M, cross.matched_teacher_ids_M
    g = torch.Generator().manual_seed(3)
    s0 = (torch.randn(12, Vs, generator=g) * 3).requires_grad_(True)
    t0 = torch.randn(10, Vt, generator=g) * 3
    s_rows, t_rows = torch.tensor([0, 3, 3, 5, 11, 7, 2]), torch.tensor([1, 0, 9, 4, 4, 8, 6])
    want = gjsd_measure(
        prefix_logmass(s0, s_rows, s_trie, ms, 1.3), prefix_logmass(t0, t_rows, t_trie, mt, 0.8),
        beta,
    )  # fmt: skip
    (want_grad,) = torch.autograd.grad(want.sum(), s0)
    monkeypatch.setattr(byte_mass, "CHUNK_ELEMS", 2 * max(Vs, Vt))  # 2 rows a chunk
    got = matched_prefix_gjsd(s0, s_rows, s_trie, ms, t0, t_rows, t_trie, mt, beta, 1.3, 0.8)
    (grad,) = torch.autograd.grad(got.sum(), s0)
    assert float(want.detach().abs().sum()) > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-6, atol=1e-9)

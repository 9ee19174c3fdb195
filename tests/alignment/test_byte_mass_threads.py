"""The byte-mass kernels (next-byte marginals, prefix marginals) run on ``alignment.cpu``'s one
pool (``alignment.spans._row_chunks``): values and gradients bit-identical at 1, 2 and 4 torch
threads on real tokenizers and text, equal to the same call in float64 (whose agreement with a
naive float64 reference is ``test_next_byte.py``'s) and to the unchunked prefix form."""

from __future__ import annotations

import pytest
import torch

import alignment.spans._byte_mass as bm
from alignment.divergence import gjsd_measure
from alignment.spans.align import align_spans_batch
from alignment.spans.next_byte import next_byte_terms
from alignment.tokens.byte_trie import byte_trie
from alignment.tokens.offsets import token_offsets
from alignment.types import SideLogits

THREADS = (1, 2, 4)
TEXT = [" The quick brown fox jumps over the lazy dog.", "\tdef f(x):\n    return x * 12345"]


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _side(tok):
    """Token ids [B, T] (a leading token covering no bytes, the text, padding) and offsets."""
    text = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXT]
    T = 1 + max(map(len, text))
    ids, offsets = [], []
    for x in text:
        off = token_offsets(tok, x)[0]
        end = off[-1:, 1:].expand(T - len(x), 2)  # zero-width: the first token and the padding
        offsets.append(torch.cat([end[:1] * 0, off, end[1:]]))
        ids.append([0, *x] + [x[-1]] * (T - 1 - len(x)))
    return torch.tensor(ids), torch.stack(offsets)


def _case(real_tokenizers):
    s_tok, t_tok = real_tokenizers["smollm2"], real_tokenizers["gpt2"]
    (s_ids, s_off), (t_ids, t_off) = _side(s_tok), _side(t_tok)
    aligned = align_spans_batch(s_off, t_off)
    Vs, Vt = len(s_tok), len(t_tok)
    g = torch.Generator().manual_seed(0)
    s_logits = torch.randn(*s_ids.shape, Vs, generator=g) * 3
    t_logits = torch.randn(*t_ids.shape, Vt, generator=g) * 3
    tries = byte_trie(s_tok, Vs), byte_trie(t_tok, Vt)
    return (s_logits, s_ids, aligned.student_span_B_Ts), (t_logits, t_ids,
            aligned.teacher_span_B_Tt), tries  # fmt: skip


def _next_byte(s, t, tries, dtype):
    x = s[0].to(dtype).requires_grad_(True)
    terms = next_byte_terms(
        SideLogits(x, s[1], s[2]), SideLogits(t[0].to(dtype), t[1], t[2]), *tries, 0.5
    )
    w = torch.linspace(0.5, 1.5, terms.divergence_E.shape[0], dtype=dtype)
    (grad,) = torch.autograd.grad((terms.divergence_E * w).sum(), x)
    return terms.divergence_E.detach(), grad


@pytest.mark.parametrize("chunk_elems", [3 * 50_257, bm.CHUNK_ELEMS])  # 3 rows: many chunks
def test_next_byte_identical_at_any_thread_count(
    real_tokenizers, torch_threads, monkeypatch, chunk_elems
):
    s, t, tries = _case(real_tokenizers)
    for logits in (s[0], t[0]):  # the module's own chunk size too: still several chunks a side
        assert logits.shape[0] * logits.shape[1] > chunk_elems // logits.shape[-1]
    monkeypatch.setattr(bm, "CHUNK_ELEMS", chunk_elems)
    results = []
    for n in THREADS:
        torch_threads(n)
        results.append(_next_byte(s, t, tries, torch.float32))
    value, grad = results[0]
    assert value.shape[0] > 50 and float(grad.abs().sum()) > 0
    for v, g in results[1:]:
        assert torch.equal(v, value) and torch.equal(g, grad)
    torch_threads(1)
    v64, g64 = _next_byte(s, t, tries, torch.float64)
    torch.testing.assert_close(value.double(), v64, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad.double(), g64, rtol=1e-3, atol=1e-6)


def test_prefix_marginals_identical_at_any_thread_count(
    real_tokenizers, torch_threads, monkeypatch
) -> None:
    (s_logits, *_), (t_logits, *_), (s_trie, t_trie) = _case(real_tokenizers)
    s0, t0 = s_logits.reshape(-1, s_logits.shape[-1]), t_logits.reshape(-1, t_logits.shape[-1])
    g = torch.Generator().manual_seed(1)
    M = 500
    ms, mt = (
        torch.randperm(s0.shape[1], generator=g)[:M],
        torch.randperm(t0.shape[1], generator=g)[:M],
    )
    R = 20
    s_rows = torch.randperm(s0.shape[0], generator=g)[:R]
    t_rows = torch.randint(0, t0.shape[0], (R,), generator=g)
    monkeypatch.setattr(bm, "CHUNK_ELEMS", 3 * 50_257)
    results = []
    for n in THREADS:
        torch_threads(n)
        x = s0.clone().requires_grad_(True)
        got = bm.matched_prefix_gjsd(x, s_rows, s_trie, ms, t0, t_rows, t_trie, mt, 0.5, 1.3, 0.8)
        results.append((got.detach(), *torch.autograd.grad(got.sum(), x)))
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))
    x = s0.double().requires_grad_(True)
    monkeypatch.setattr(bm, "CHUNK_ELEMS", 1 << 30)  # one chunk: the unchunked form
    want = gjsd_measure(
        bm.prefix_logmass(x, s_rows, s_trie, ms, 1.3),
        bm.prefix_logmass(t0.double(), t_rows, t_trie, mt, 0.8),
        0.5,
    )
    (want_grad,) = torch.autograd.grad(want.sum(), x)
    assert float(want.detach().abs().sum()) > 1e-3
    torch.testing.assert_close(results[0][0], want, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(results[0][1].double(), want_grad, rtol=1e-3, atol=1e-7)

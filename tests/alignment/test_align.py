"""Span alignment: hand cases, the definition on random tokenizations, real tokenizers, batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment.errors import AlignmentError
from alignment.spans.align import align_spans, align_spans_batch
from alignment.tokens.offsets import byte_offsets


def test_hand_case():
    # bytes "abcdef": a = ab|cd|ef, b = a|bcd|e|f, plus a zero-width BOS on b
    a = [(0, 2), (2, 4), (4, 6)]
    b = [(0, 0), (0, 1), (1, 4), (4, 5), (5, 6)]
    a_span, b_span = align_spans(a, b)
    assert a_span.tolist() == [0, 0, 1]
    assert b_span.tolist() == [-1, 0, 0, 1, 1]


def test_identical_tokenizations_give_identity():
    off = [(0, 0), (0, 3), (3, 4), (4, 9), (9, 9)]
    a_span, b_span = align_spans(off, off)
    assert a_span.tolist() == b_span.tolist() == [-1, 0, 1, 2, -1]


def test_offsets_not_starting_at_zero_and_empty():
    a_span, b_span = align_spans([(5, 7), (7, 8)], [(5, 6), (6, 8)])
    assert a_span.tolist() == [0, 0] and b_span.tolist() == [0, 0]
    a_span, b_span = align_spans(np.zeros((0, 2)), [(3, 3)])
    assert a_span.tolist() == [] and b_span.tolist() == [-1]


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ([(0, 2), (2, 4)], [(0, 2), (2, 5)], "cover different bytes"),
        ([(0, 2), (3, 4)], [(0, 4)], "do not tile"),
        ([(0, 2), (2, 1)], [(0, 2)], "end < start"),
    ],
)
def test_bad_offsets_raise(a, b, match):
    with pytest.raises(AlignmentError, match=match):
        align_spans(a, b)


def reference_spans(a, b):
    """Independent per-byte reference: walk both sides; a span closes where both close."""

    def cuts(off):
        return {e for s, e in off if e > s}

    common = sorted(cuts(a) & cuts(b))

    def label(off):
        return [next(k for k, c in enumerate(common) if e <= c) if e > s else -1 for s, e in off]

    return label(a), label(b)


@st.composite
def tokenization(draw, n: int):
    """Random cuts of n bytes into tokens, with zero-width tokens inserted anywhere."""
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n))) if n > 1 else []
    bounds = [0, *cuts, n] if n else [0]
    off = list(itertools.pairwise(bounds))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(off)))
        at = off[pos - 1][1] if pos else 0
        off.insert(pos, (at, at))
    return off


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_tokenizations_satisfy_the_definition(data):
    n = data.draw(st.integers(0, 30))
    a, b = data.draw(tokenization(n)), data.draw(tokenization(n))
    a_span, b_span = align_spans(a, b)
    assert (a_span.tolist(), b_span.tolist()) == reference_spans(a, b)
    # span k covers the same bytes on both sides, numbered 0.. in order, ends at common cuts only
    S = int(max(a_span.numpy().max(initial=-1), b_span.numpy().max(initial=-1))) + 1
    for k in range(S):
        sa = [off for off, s in zip(a, a_span.tolist(), strict=True) if s == k]
        sb = [off for off, s in zip(b, b_span.tolist(), strict=True) if s == k]
        assert (sa[0][0], sa[-1][1]) == (sb[0][0], sb[-1][1])
        inner_a, inner_b = {e for _, e in sa[:-1]}, {e for _, e in sb[:-1]}
        assert not inner_a & {e for _, e in sb} and not inner_b & {e for _, e in sa}
    assert list(a_span[a_span >= 0]) == sorted(a_span[a_span >= 0].tolist())


TEXT = "Привет 你好 👨‍👩‍👧 code:\tx  =  f(12345)\r\nend"


@pytest.mark.parametrize(("a", "b"), [("gpt2", "gemma3"), ("smollm2", "qwen"), ("qwen", "qwen")])
def test_real_tokenizers(real_tokenizers, a, b):
    data = TEXT.encode("utf-8")
    _, a_off = byte_offsets(real_tokenizers[a], TEXT)
    _, b_off = byte_offsets(real_tokenizers[b], TEXT)
    a_span, b_span = align_spans(a_off, b_off)
    S = int(a_span.max()) + 1
    assert int(b_span.max()) + 1 == S
    for k in range(S):
        a_bytes = b"".join(
            data[s:e] for (s, e), sp in zip(a_off.tolist(), a_span, strict=True) if sp == k
        )
        b_bytes = b"".join(
            data[s:e] for (s, e), sp in zip(b_off.tolist(), b_span, strict=True) if sp == k
        )
        assert a_bytes == b_bytes != b""
    if a == b:
        assert torch.equal(a_span[a_span >= 0], torch.arange(S))


def _pad(rows, T):
    out = torch.zeros(len(rows), T, 2, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for r, off in enumerate(rows):
        if off:
            out[r, : len(off)] = torch.tensor(off)
            mask[r, : len(off)] = True
    return out, mask


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_batch_equals_rows(data):
    B = data.draw(st.integers(1, 4))
    ns = [data.draw(st.integers(0, 12)) for _ in range(B)]
    rows_a = [data.draw(tokenization(n)) for n in ns]
    rows_b = [data.draw(tokenization(n)) for n in ns]
    a, a_mask = _pad(rows_a, max(len(r) for r in rows_a) + 2)
    b, b_mask = _pad(rows_b, max(len(r) for r in rows_b) + 1)
    got = align_spans_batch(a, b, a_mask, b_mask)
    for r in range(B):
        ra, rb = align_spans(rows_a[r], rows_b[r])
        assert got.student_span_B_Ts[r, : len(ra)].tolist() == ra.tolist()
        assert got.teacher_span_B_Tt[r, : len(rb)].tolist() == rb.tolist()
        assert (got.student_span_B_Ts[r, len(ra) :] == -1).all()
        assert (got.teacher_span_B_Tt[r, len(rb) :] == -1).all()
        assert (
            got.num_spans_B[r]
            == int(max(ra.numpy().max(initial=-1), rb.numpy().max(initial=-1))) + 1
        )


def test_batch_rows_must_cover_same_bytes():
    a, _ = _pad([[(0, 2)], [(0, 3)]], 1)
    b, _ = _pad([[(0, 2)], [(0, 4)]], 1)
    with pytest.raises(AlignmentError, match="row 1"):
        align_spans_batch(a, b)


def test_one_to_one_share():
    a, _ = _pad([[(0, 1), (1, 2), (2, 4)]], 3)
    b, _ = _pad([[(0, 1), (1, 3), (3, 4)]], 3)
    got = align_spans_batch(a, b)
    assert got.num_spans_B.tolist() == [2]
    assert got.one_to_one_B().tolist() == [0.5]

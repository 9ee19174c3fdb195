"""Next-byte marginal divergence: hand-computed cases, a naive float64 reference on random
vocabularies, tokenizations and logits (values and gradients), chunking, edge cases."""

from __future__ import annotations

import math
import random

import pytest
import torch

import alignment.spans._byte_mass as bm
from alignment.errors import AlignmentError
from alignment.spans.next_byte import next_byte_loss, next_byte_terms
from alignment.tokens.byte_trie import byte_trie, trie_from_bytes
from alignment.types import SideLogits

# ---------------------------------------------------------------- an independent reference


def _spans(lengths_a: list[int], lengths_b: list[int]) -> tuple[list[int], list[int]]:
    """Span id per token of two tokenizations of the same bytes (spans end at common ends)."""
    ends_a = {sum(lengths_a[: i + 1]) for i in range(len(lengths_a))}
    ends_b = {sum(lengths_b[: i + 1]) for i in range(len(lengths_b))}
    common = sorted(ends_a & ends_b)

    def assign(lengths):
        out, pos = [], 0
        for n in lengths:
            pos += n
            out.append(sum(1 for e in common if e < pos))
        return out

    return assign(lengths_a), assign(lengths_b)


def _greedy(text: bytes, vocab: list[bytes]) -> list[int]:
    """Longest-match tokenization (ids of ``vocab``; every single byte of the text is in it)."""
    out, i = [], 0
    while i < len(text):
        best = max(
            (j for j, w in enumerate(vocab) if w and text.startswith(w, i)),
            key=lambda j: len(vocab[j]),
        )
        out.append(best)
        i += len(vocab[best])
    return out


def _ref_dist(p: list[float], vocab: list[bytes], prefix: bytes) -> dict[int, object]:
    """class -> mass (a torch scalar) of the tokens extending ``prefix`` (any length at depth 0)."""
    d = len(prefix)
    out: dict[int, object] = {}
    for w, pw in zip(vocab, p, strict=True):
        if d == 0:
            c = w[0] if w else 256
        elif w.startswith(prefix) and len(w) > d:
            c = w[d]
        else:
            continue
        out[c] = out[c] + pw if c in out else pw
    return out


def _normalized(d: dict) -> dict:
    z = sum(d.values())
    return {c: v / z for c, v in d.items()}


def _ref_gjsd(s: dict, t: dict, beta: float):
    common = sorted(set(s) & set(t))
    if len(common) < 2:
        return None
    zs, zt = sum(s[c] for c in common), sum(t[c] for c in common)
    total = 0.0
    for c in common:
        a, b = s[c] / zs, t[c] / zt
        if beta == 0:
            total = total + b * torch.log(b / a)
        elif beta == 1:
            total = total + a * torch.log(a / b)
        else:
            m = beta * b + (1 - beta) * a
            total = total + beta * b * torch.log(b / m) + (1 - beta) * a * torch.log(a / m)
    return total


def _ref_events(logits, ids, spans, vocab):
    """span -> [(probs of the row, token bytes, depth)], one per byte (or byte-less stop)."""
    per_span: dict[int, list] = {}
    span_bytes: dict[int, int] = {}
    for tok, k in zip(ids, spans, strict=True):
        span_bytes[k] = span_bytes.get(k, 0) + len(vocab[tok])
    for t, (tok, k) in enumerate(zip(ids, spans, strict=True)):
        w = vocab[tok]
        if k < 0 or (not w and span_bytes[k]):
            continue  # byte-less tokens count only as a byte-less span's stop
        p = torch.softmax(logits[t - 1].double(), -1)
        for d in range(max(len(w), 1)):
            per_span.setdefault(k, []).append((p, w, d))
    return per_span


def _ref_inside(p, w, d, vocab, teacher_at):
    """Both sides' distributions at depth ``d`` of the student's token ``w`` (``alignment.
    byte_loss``); ``teacher_at[i]``: the teacher's distribution at the token's ``i``-th byte."""
    cont, t = _ref_dist(list(p), vocab, w[:d]), teacher_at[d]
    if d == 0:
        return cont, t
    t_in = {c: v for c, v in t.items() if c in cont}
    rest = [v for c, v in t.items() if c not in cont]
    if rest:  # 256: the bytes (or stop) the token cannot go on with
        t_in[256] = sum(rest)
    ends = [k for k in range(1, d + 1) if w[:k] in vocab]
    if not ends:
        return cont, t_in
    k = max(ends)  # the longest token ending on the path
    r = sum(pw for v, pw in zip(vocab, p, strict=True) if v == w[:k])
    for i in range(k, d):
        r = r * teacher_at[i][w[i]]
    return {**cont, 256: r}, t_in


def _ref_loss(s_logits, t_logits, s_ids, t_ids, s_spans, t_spans, s_vocab, t_vocab, beta, inside):
    """Sum of the divergences, one Python loop per event (float64)."""
    total, count = 0.0, 0
    for b in range(len(s_ids)):
        s_ev = _ref_events(s_logits[b], s_ids[b], s_spans[b], s_vocab)
        t_ev = _ref_events(t_logits[b], t_ids[b], t_spans[b], t_vocab)
        for k in sorted(set(s_ev) & set(t_ev)):
            if len(s_ev[k]) != len(t_ev[k]):
                continue
            teacher_at: list[dict] = []
            for (ps, ws, ds), (pt, wt, dt) in zip(s_ev[k], t_ev[k], strict=True):
                t_dist = _normalized(_ref_dist(list(pt), t_vocab, wt[:dt]))
                teacher_at = [t_dist] if ds == 0 else [*teacher_at, t_dist]
                if not inside and (ds or dt):
                    continue
                j = _ref_gjsd(*_ref_inside(ps, ws, ds, s_vocab, teacher_at), beta)
                if j is not None:
                    total, count = total + j, count + 1
    return total, count


def _case(seed: int, B: int = 3):
    """Random vocabularies over ``abc``, random texts, greedy tokenizations, random logits."""
    rng = random.Random(seed)
    letters = [b"a", b"b", b"c"]

    def vocab():
        merges = {bytes(rng.choice(b"abc") for _ in range(rng.randint(2, 3))) for _ in range(5)}
        return [b"", *letters, *sorted(merges)]  # id 0: the stop token (no bytes)

    s_vocab, t_vocab = vocab(), vocab()
    rows = []
    for _ in range(B):
        text = bytes(rng.choice(b"abc") for _ in range(rng.randint(1, 7)))
        s_tok, t_tok = _greedy(text, s_vocab), _greedy(text, t_vocab)
        s_sp, t_sp = _spans([len(s_vocab[i]) for i in s_tok], [len(t_vocab[i]) for i in t_tok])
        stop = rng.random() < 0.7  # both sides stop: one extra span of one byte-less token
        if stop:
            S = max(s_sp) + 1
            s_tok, t_tok, s_sp, t_sp = [*s_tok, 0], [*t_tok, 0], [*s_sp, S], [*t_sp, S]
        rows.append((s_tok, t_tok, s_sp, t_sp))

    def pad(seqs, fill):
        T = 1 + max(len(x) for x in seqs)
        return [[fill if fill < 0 else 1] + x + [fill] * (T - 1 - len(x)) for x in seqs]

    s_ids = pad([r[0] for r in rows], 0)
    t_ids = pad([r[1] for r in rows], 0)
    s_spans, t_spans = pad([r[2] for r in rows], -1), pad([r[3] for r in rows], -1)
    g = torch.Generator().manual_seed(seed)
    s_logits = (2 * torch.randn(B, len(s_ids[0]), len(s_vocab), generator=g)).double()
    t_logits = (2 * torch.randn(B, len(t_ids[0]), len(t_vocab), generator=g)).double()
    return s_logits, t_logits, s_ids, t_ids, s_spans, t_spans, s_vocab, t_vocab


def _sides(s_logits, t_logits, s_ids, t_ids, s_spans, t_spans, tau=1.0):
    long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return (
        SideLogits(s_logits, long(s_ids), long(s_spans), tau),
        SideLogits(t_logits, long(t_ids), long(t_spans), tau),
    )


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("inside", [True, False])
def test_values_and_gradients_match_the_naive_reference(beta, seed, inside):
    s_logits, t_logits, s_ids, t_ids, s_sp, t_sp, s_vocab, t_vocab = _case(seed)
    s_logits.requires_grad_(True)
    ref, count = _ref_loss(
        s_logits, t_logits, s_ids, t_ids, s_sp, t_sp, s_vocab, t_vocab, beta, inside
    )
    (g_ref,) = torch.autograd.grad(ref, s_logits) if count else (torch.zeros_like(s_logits),)
    s, t = _sides(s_logits, t_logits, s_ids, t_ids, s_sp, t_sp)
    terms = next_byte_terms(s, t, trie_from_bytes(s_vocab), trie_from_bytes(t_vocab), beta, inside)
    assert terms.divergence_E.shape[0] == count > 0
    got = terms.divergence_E.sum()
    (g_got,) = torch.autograd.grad(got, s_logits)
    assert float(got.detach()) == pytest.approx(float(ref), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-7, atol=1e-10)


def test_hand_computed_case_with_a_within_token_position():
    """Student vocab {stop, a, b, ab, aa} writes "ab" as one token; a char teacher writes a, b."""
    s_vocab, t_vocab = [b"", b"a", b"b", b"ab", b"aa"], [b"", b"a", b"b"]
    s_p = torch.tensor([0.1, 0.2, 0.3, 0.3, 0.1], dtype=torch.float64)  # row 0 of the student
    t_p0 = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)  # teacher before "a"
    t_p1 = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)  # teacher after "a"
    s_logits = s_p.log().reshape(1, 1, 5).expand(1, 2, 5).clone().requires_grad_(True)
    t_logits = torch.stack([t_p0.log(), t_p1.log(), t_p1.log()]).reshape(1, 3, 3)
    s, t = _sides(s_logits, t_logits, [[1, 3]], [[1, 1, 2]], [[-1, 0]], [[-1, 0, 0]])
    terms = next_byte_terms(s, t, trie_from_bytes(s_vocab), trie_from_bytes(t_vocab), 1.0)
    # byte 0: student (stop .1, a .2+.3+.1, b .3), teacher (.5, .25, .25); KL(student || teacher)
    kl0 = 0.1 * math.log(0.1 / 0.5) + 0.6 * math.log(0.6 / 0.25) + 0.3 * math.log(0.3 / 0.25)
    # byte 1, inside the student's "ab" after "a": the token goes on with a ("aa" .1) or b ("ab"
    # .3); any other byte (here the stop, class 256) needs the token "a" to end there (.2): the
    # student (other .2, a .1, b .3) / .6 against the teacher's (stop .2, a .2, b .6)
    q1 = (0.2 / 0.6, 0.1 / 0.6, 0.3 / 0.6)
    kl1 = sum(a * math.log(a / b) for a, b in zip(q1, (0.2, 0.2, 0.6), strict=True))
    assert terms.divergence_E.tolist() == pytest.approx([kl0, kl1], abs=1e-12)
    assert terms.exact_E.tolist() == [True, False]
    t_logits[0, 1] = torch.tensor(
        [0.2, 0.6, 0.2], dtype=torch.float64
    ).log()  # the teacher now prefers "a" after "a"
    s, t = _sides(s_logits, t_logits, [[1, 3]], [[1, 1, 2]], [[-1, 0]], [[-1, 0, 0]])
    terms = next_byte_terms(s, t, trie_from_bytes(s_vocab), trie_from_bytes(t_vocab), 1.0)
    kl1 = sum(a * math.log(a / b) for a, b in zip(q1, (0.2, 0.6, 0.2), strict=True))
    assert float(terms.divergence_E[1]) == pytest.approx(kl1, abs=1e-12)
    # the gradient moves the student's mass from "ab" towards "aa" at row 0
    terms.divergence_E[1].backward()
    assert s_logits.grad[0, 0, 4] < 0 < s_logits.grad[0, 0, 3]


def test_identical_tokenizers_and_models_give_zero():
    s_logits, _, s_ids, _, s_sp, _, s_vocab, _ = _case(3)
    s_logits.requires_grad_(True)
    s, t = _sides(s_logits, s_logits.detach().clone(), s_ids, s_ids, s_sp, s_sp)
    trie = trie_from_bytes(s_vocab)
    for beta in (0.0, 0.5, 1.0):
        loss = next_byte_loss(s, t, trie, trie, beta)
        (g,) = torch.autograd.grad(loss, s_logits)
        assert float(loss) == pytest.approx(0.0, abs=1e-12)
        assert float(g.abs().max()) < 1e-12


def test_chunked_equals_unchunked(monkeypatch):
    s_logits, t_logits, s_ids, t_ids, s_sp, t_sp, s_vocab, t_vocab = _case(4)
    tries = trie_from_bytes(s_vocab), trie_from_bytes(t_vocab)
    out = []
    for elems in (1 << 22, len(s_vocab)):  # one chunk; one row per chunk (checkpointed)
        monkeypatch.setattr(bm, "CHUNK_ELEMS", elems)
        x = s_logits.clone().requires_grad_(True)
        s, t = _sides(x, t_logits, s_ids, t_ids, s_sp, t_sp)
        loss = next_byte_loss(s, t, *tries, 0.5, reduction="sum")
        out.append((loss, torch.autograd.grad(loss, x)[0]))
    torch.testing.assert_close(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1])


def test_temperature_is_applied_per_side():
    s_logits, t_logits, s_ids, t_ids, s_sp, t_sp, s_vocab, t_vocab = _case(5)
    tries = trie_from_bytes(s_vocab), trie_from_bytes(t_vocab)
    s, t = _sides(s_logits, t_logits, s_ids, t_ids, s_sp, t_sp, tau=2.0)
    s1, t1 = _sides(s_logits / 2, t_logits / 2, s_ids, t_ids, s_sp, t_sp)
    torch.testing.assert_close(next_byte_loss(s, t, *tries), next_byte_loss(s1, t1, *tries))


def test_no_spans_gives_zero_with_zero_gradient():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    span = [[-1, -1, -1]] * 2
    s, t = _sides(x, torch.randn(2, 3, 4).double(), [[1, 1, 1]] * 2, [[1, 1, 1]] * 2, span, span)
    trie = trie_from_bytes([b"", b"a", b"b", b"ab"])
    loss = next_byte_loss(s, t, trie, trie)
    loss.backward()
    assert float(loss) == 0.0 and float(x.grad.abs().sum()) == 0.0


def test_bad_input_is_a_clear_error():
    x = torch.randn(1, 2, 4).double()
    s, t = _sides(x, x, [[1, 2]], [[1, 2]], [[-1, 0]], [[-1, 0]])
    with pytest.raises(AlignmentError, match="beta"):
        next_byte_terms(s, t, trie_from_bytes([b""] * 4), trie_from_bytes([b""] * 4), beta=2.0)
    with pytest.raises(AlignmentError, match="columns"):
        next_byte_terms(s, t, trie_from_bytes([b"", b"a"]), trie_from_bytes([b"", b"a"]))
    s0, _ = _sides(x, x, [[1, 2]], [[1, 2]], [[0, 0]], [[-1, 0]])
    with pytest.raises(AlignmentError, match="token 0"):
        next_byte_terms(s0, t, trie_from_bytes([b""] * 4), trie_from_bytes([b""] * 4))


def test_real_tokenizer_trie_ranges_hold_exactly_the_extending_tokens(real_tokenizers):
    """GPT-2 (byte-level) and Gemma-3 (byte fallback): each depth's sorted range holds exactly the
    tokens that extend the prefix, and every byte starts some token (all 256 classes exist)."""
    from alignment.tokens.offsets import token_bytes_table

    for name in ("gpt2", "gemma3"):
        tok = real_tokenizers[name]
        trie = byte_trie(tok)
        assert byte_trie(tok) is trie  # cached
        table = token_bytes_table(tok)
        word = tok(" hello", add_special_tokens=False)["input_ids"][0]
        w, r = table.bytes_V[word], int(trie.rank_V[word])
        for d in range(1, len(w) + 1):
            lo, hi = int(trie.lo_L_V[d, r]), int(trie.hi_L_V[d, r])
            want = {
                i
                for i, b in enumerate(table.bytes_V)
                if b.startswith(w[:d]) and not table.special_V[i]
            }
            assert set(trie.perm_V[lo:hi].tolist()) == want
        assert set(range(256)) <= set(trie.byte_L_V[0].unique().tolist())


@pytest.mark.parametrize("name", ["gpt2", "gemma3"])
def test_class_logprobs_on_a_real_vocabulary_match_a_dense_reference(real_tokenizers, name):
    """The fast class masses (two-byte groups for depths 0 and 1, sorted ranges deeper) equal a
    float64 dense sum over the tokens extending the prefix, at every depth of real tokens, with
    gradients; the support holds exactly the classes some token falls in."""
    from alignment.tokens.offsets import token_bytes_table

    tok = real_tokenizers[name]
    table = token_bytes_table(tok)
    V = len(table.bytes_V)
    trie = byte_trie(tok, V)
    vocab = [b"" if table.special_V[i] else table.bytes_V[i] for i in range(V)]
    words = tok(" wonderful\t1", add_special_tokens=False)["input_ids"]
    row, token, depth = zip(
        *[(i, w, d) for i, w in enumerate(words) for d in range(len(vocab[w]))], strict=True
    )
    by_first: dict[int, list[int]] = {}
    for i, b in enumerate(vocab):
        by_first.setdefault(b[0] if b else bm.STOP, []).append(i)
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(len(words), V, generator=g, dtype=torch.float64) * 3).requires_grad_()
    long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    events = bm.ByteEvents(long(row), long(token), long(depth), long(row) * 0, long(row) * 0)
    got, sup = bm.class_logprobs(logits, events, trie, temperature=1.5)
    logp = torch.log_softmax(logits / 1.5, -1)
    cols = []
    for r, w, d in zip(row, token, depth, strict=True):
        u = vocab[w][:d]
        cls = dict(by_first) if d == 0 else {}
        for i in by_first[u[0]] if d else []:
            if vocab[i].startswith(u):
                cls.setdefault(vocab[i][d] if len(vocab[i]) > d else bm.END, []).append(i)
        col = torch.full((258,), float("-inf"), dtype=torch.float64)
        for c, ids in cls.items():
            col[c] = torch.logsumexp(logp[r, ids], 0)
        cols.append(col)
        assert set(sup[len(cols) - 1].nonzero().squeeze(1).tolist()) == set(cls)
    want = torch.stack(cols)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    weights = torch.randn(want.shape, generator=g, dtype=torch.float64)
    keep = torch.isfinite(want)
    (g_got,) = torch.autograd.grad((got[keep] * weights[keep]).sum(), logits)
    (g_want,) = torch.autograd.grad((want[keep] * weights[keep]).sum(), logits)
    torch.testing.assert_close(g_got, g_want, rtol=1e-7, atol=1e-10)

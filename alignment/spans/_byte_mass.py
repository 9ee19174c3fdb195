"""Byte-class masses of a next-token distribution (private kernel of ``alignment.spans.next_byte``
and of the prefix marginals in ``alignment.spans.gold``).

A model that has just written a token boundary gives a distribution over its next *token*
``P(w)``. Projected onto the token's first byte it becomes a distribution over the next *byte*:

    q(c) = sum_{w : bytes(w)[0] = c} P(w)  (c in 0..255),   q(256) = sum_{w : bytes(w) = b""} P(w)

(class 256, ``STOP``, collects the tokens with no bytes: EOS, end of turn, other specials, padded
ids). This is the exact marginal of the model's next-token distribution over the next byte. Two
models with different vocabularies can be compared on it directly wherever both have a token
boundary at the same byte position: a span start of ``alignment.align_spans``.

Inside a token (``ell`` bytes ``u`` of the current token written, ``ell >= 1``) a model has no
distribution of its own; from the row that predicted the current token this module reads the mass
of the tokens extending ``u + c`` for every byte ``c`` and the mass of the tokens that are exactly
``u`` (``class_logprobs``: columns 0..255, ``STOP`` at depth 0, ``END`` at depth >= 1). How the
two sides are compared from these is ``alignment.spans.next_byte``. ``prefix_logmass`` is the mass
of the tokens whose bytes start with a given token's bytes (the GOLD-style prefix marginals).

Computation: every class is a contiguous range of the byte-sorted vocabulary
(``alignment.tokens.byte_trie``), so each distinct logits row is log-softmaxed and sorted once and
reduced to its two-byte groups (``torch.segment_reduce``, log-sum-exp with a per-group max: no
underflow); a depth-0 event sums those by first byte, a depth-1 event reads the groups inside its
range, deeper events (short ranges) read their sorted range as one ragged batch. Rows are processed
a chunk at a time, forward and backward on one pool (``alignment.spans._row_chunks``: recomputed
per chunk in backward): no more than one chunk of ``[rows, V]`` per thread at once
(measured speed: ``benchmarks/RESULTS-alignment-speed.md``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from alignment.divergence import gjsd_measure
from alignment.errors import AlignmentError
from alignment.spans._row_chunks import RowJob, row_chunks
from alignment.tokens.byte_trie import STOP, ByteTrie
from alignment.types import SideLogits

NUM_CLASSES = 257
END = 257  # column of the tokens that end exactly at the bytes already written (depth >= 1)
_DUMP = 258  # scatter column of tokens outside an event's range (dropped)
# rows per chunk = CHUNK_ELEMS // V: 4 MiB of float32 per [rows x V] temporary. At 16 MiB
# (1 << 22) every temporary of a chunk was a fresh mapping from glibc, faulted in page by page
# (~130-170k minor faults, a third of the CPU time of a next-byte call on a 262k vocabulary)
# and, with two pool threads faulting and unmapping in one process, the 2-thread call took up to
# 1.58x the CPU of the 1-thread one; at 4 MiB they are reused (benchmarks/RESULTS-cross-
# objectives.md, "Recheck of the next-byte cell"). The chunks depend on the rows only: values
# are the same at any thread count.
CHUNK_ELEMS = 1 << 20


@dataclass(frozen=True)
class ByteEvents:
    """One side's next-byte events, in the order shared by both sides (row, span, byte).

    Attributes:
        row_E: flat logits row (``b * T + t - 1``) that predicted the current token.
        token_E: the current token's id.
        depth_E: bytes of the current token already written (0: at a token boundary).
        batch_E, span_E: the event's sequence and span.
    """

    row_E: torch.Tensor
    token_E: torch.Tensor
    depth_E: torch.Tensor
    batch_E: torch.Tensor
    span_E: torch.Tensor


def side_events(
    side: SideLogits, trie: ByteTrie, num_spans: int
) -> tuple[ByteEvents, torch.Tensor]:
    """One event per completion byte (and one per byte-less token of a byte-less span: the stop).

    Returns ``(events, count_B_S)``: the events in (row, span, byte) order and the number of
    events per span. Tokens outside spans (``-1``) give none.
    """
    ids, span = side.input_ids_B_T.long(), side.span_B_T.long()
    B, T = ids.shape
    S, device = num_spans, ids.device
    length = trie.length_V.to(device)[ids.clamp(0, trie.vocab_size - 1)]
    length = torch.where(span >= 0, length, 0)
    flat_span = torch.where(span >= 0, torch.arange(B, device=device)[:, None] * S + span, B * S)
    span_bytes = torch.zeros(B * S + 1, dtype=torch.long, device=device)
    span_bytes.index_add_(0, flat_span.reshape(-1), length.reshape(-1))
    stop_tok = (span >= 0) & (length == 0) & (span_bytes[flat_span] == 0)
    n_tok = torch.where(stop_tok, 1, length)  # events per token
    b, t = n_tok.nonzero(as_tuple=True)
    reps = n_tok[b, t]
    first = torch.cumsum(reps, 0) - reps
    depth = torch.arange(int(reps.sum()), device=device) - torch.repeat_interleave(first, reps)
    b, t = torch.repeat_interleave(b, reps), torch.repeat_interleave(t, reps)
    count = torch.zeros(B * S + 1, dtype=torch.long, device=device)
    count.index_add_(0, flat_span[b, t], torch.ones_like(b))
    events = ByteEvents(b * T + t - 1, ids[b, t], depth, b, span[b, t])
    return events, count[: B * S].reshape(B, S)


def _select(events: ByteEvents, keep_E: torch.Tensor) -> ByteEvents:
    return ByteEvents(*(getattr(events, f)[keep_E] for f in ByteEvents.__dataclass_fields__))


def class_logprobs(
    logits_N_V: torch.Tensor,
    events: ByteEvents,
    trie: ByteTrie,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp_E_K, support_E_K)`` for ``K = 258`` columns, one chunk of logits rows at a time.

    For an event at depth ``ell`` of token ``w*`` (``u = bytes(w*)[:ell]``), with ``P`` the
    softmax of its logits row at ``temperature``: column ``c < 256`` holds
    ``log sum P(w)`` over the tokens extending ``u + c`` (at depth 0: starting with byte ``c``),
    column ``STOP`` (256) the tokens without bytes (depth 0 only), column ``END`` (257) the tokens
    whose bytes are exactly ``u`` (depth >= 1 only). ``support`` is True where at least one token
    falls in the column. Differentiable in ``logits_N_V`` (recomputed per chunk in backward).

    Work: one log-softmax per distinct row; a depth-0 event scatters its whole row with the fixed
    first-byte classes, a deeper event only its sorted range ``[lo, hi)`` (the tokens extending
    ``u``), as one ragged batch. A class's mass is a log-sum-exp (per-class max: no underflow).
    """
    if logits_N_V.shape[-1] != trie.vocab_size:
        raise AlignmentError(
            f"logits have {logits_N_V.shape[-1]} columns but the byte trie {trie.vocab_size}; "
            "build it with byte_trie(tokenizer, vocab_size=<logit width>)"
        )
    V, dev = trie.vocab_size, logits_N_V.device
    rows_U, inv_E = torch.unique(events.row_E, return_inverse=True)
    chunk = max(1, CHUNK_ELEMS // max(V, 1))
    tables = _tables(trie, dev)
    rank = tables[1]
    r_E, d_E = rank[events.token_E], events.depth_E
    lo_E = tables[3][d_E, r_E].long()
    hi_E = tables[4][d_E, r_E].long()
    # the events of each chunk of distinct rows: a stable sort by row, cut where chunks start
    order = torch.sort(inv_E, stable=True).indices
    cuts = torch.searchsorted(inv_E[order], torch.arange(0, int(rows_U.shape[0]) + chunk, chunk))
    cuts = cuts.tolist()
    places = [order[a:b] for a, b in itertools.pairwise(cuts)] or [order]
    starts = range(0, len(places) * chunk, chunk)
    rows = [rows_U[s : s + chunk] for s in starts]

    def fn(z: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = places[i]
        return _chunk_logprobs(
            z, inv_E[idx] - starts[i], d_E[idx], lo_E[idx], hi_E[idx], tables, temperature
        )

    E = int(events.row_E.shape[0])
    out = torch.empty(E, _DUMP, dtype=_dtype(logits_N_V), device=dev)
    sup = torch.empty(E, _DUMP, dtype=torch.bool, device=dev)
    return row_chunks(logits_N_V, RowJob(rows, places, fn, out, (sup,)))


_TABLES: Any = weakref.WeakKeyDictionary()


def _tables(trie: ByteTrie, dev: torch.device) -> tuple[torch.Tensor, ...]:
    """Per-trie tensors on ``dev`` (cached per trie and device): ``(perm, rank, byte_L_V, lo_L_V,
    hi_L_V, len_G, first_len, second_G, group_V)``.

    In sorted order the tokens sharing their first two bytes (a lone one-byte or byte-less token:
    a group of its own) are ``G`` consecutive groups: ``len_G`` their lengths, ``second_G`` the
    column of their second byte at depth 1 (``END`` for the one-byte token), ``group_V`` the
    group of each sorted position; ``first_len`` [257] the number of groups of each first-byte
    class, in sorted order (``STOP``: the byte-less tokens sort first, then bytes 0..255)."""
    with contextlib.suppress(KeyError, TypeError):
        return _TABLES[trie][dev]
    perm, rank = trie.perm_V.to(dev), trie.rank_V.to(dev)
    byte_L_V, lo_L_V = trie.byte_L_V.to(dev), trie.lo_L_V.to(dev)
    V, L = byte_L_V.shape[1], byte_L_V.shape[0] - 1
    pos = torch.arange(V, device=dev)
    starts = lo_L_V[2] == pos if L >= 2 else torch.ones(V, dtype=torch.bool, device=dev)
    group_V = torch.cumsum(starts.long(), 0) - 1
    len_G = torch.bincount(group_V, minlength=int(starts.sum()))
    first_G = byte_L_V[0][starts].long()
    second_G = byte_L_V[1][starts].long() if L >= 1 else torch.full_like(first_G, STOP)
    second_G = torch.where(second_G == STOP, END, second_G)
    first_len = torch.bincount(torch.where(first_G == STOP, 0, first_G + 1), minlength=NUM_CLASSES)
    out = (perm, rank, byte_L_V, lo_L_V, trie.hi_L_V.to(dev), len_G, first_len, second_G,
           group_V)  # fmt: skip
    with contextlib.suppress(TypeError):
        _TABLES.setdefault(trie, {})[dev] = out
    return out


def _dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _segment_logsumexp(x: torch.Tensor, index: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """log of the sums of ``exp(x)`` scattered to ``n`` slots of ``dim`` by ``index`` (``-inf``
    where nothing lands), shifted by each slot's max (no underflow)."""
    shape = list(x.shape)
    shape[dim] = n
    cmax = torch.full(shape, float("-inf"), dtype=x.dtype, device=x.device)
    cmax = cmax.scatter_reduce(dim, index, x.detach(), reduce="amax", include_self=True)
    cmax = torch.where(torch.isfinite(cmax), cmax, torch.zeros((), dtype=x.dtype))
    e = torch.exp(x - cmax.gather(dim, index))
    return torch.log(torch.zeros_like(cmax).scatter_add(dim, index, e)) + cmax


def _contiguous_logsumexp(x_n_V: torch.Tensor, lengths_K: torch.Tensor) -> torch.Tensor:
    """[n, K] log-sum-exp of ``x`` over consecutive column ranges of the given lengths (``-inf``
    for an empty one), shifted by each range's max."""
    n, K = x_n_V.shape[0], lengths_K.shape[0]
    lengths = lengths_K.expand(n, K).contiguous()
    with torch.no_grad():
        cmax = torch.segment_reduce(x_n_V, "max", lengths=lengths, axis=1, unsafe=True)
        cmax = torch.where(torch.isfinite(cmax), cmax, torch.zeros((), dtype=cmax.dtype))
    e = torch.exp(x_n_V - torch.repeat_interleave(cmax, lengths_K, dim=1))
    total = torch.segment_reduce(e, "sum", lengths=lengths, axis=1, unsafe=True)
    return torch.log(total) + cmax


def _chunk_logprobs(
    z_n_V, row_e, depth_e, lo_e, hi_e, tables, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, support)`` [e, 258] of the events of the gathered logits rows ``z_n_V``
    (``row_e``: index into them): log column masses, and True where at least one token falls in
    the column.

    Per row: the log-masses of the two-byte groups (``_tables``), one pass over the sorted row;
    depth 0 sums them by first byte, depth 1 reads the groups inside its range, deeper events
    read their (short) sorted range."""
    perm, _, byte_L_V, _, _, len_G, first_len, second_G, group_V = tables
    e, K, V = row_e.shape[0], _DUMP, byte_L_V.shape[1]
    z = z_n_V.to(_dtype(z_n_V))
    if temperature != 1.0:
        z = z / temperature
    logp = z - torch.logsumexp(z, dim=-1, keepdim=True)
    out = logp.new_full((e, K), float("-inf"))
    sup = torch.zeros((e, K), dtype=torch.bool, device=logp.device)
    if e == 0:  # still on the graph
        return out + logp.sum() * 0, sup
    sorted_n_V = logp.index_select(1, perm)  # prefix classes are contiguous ranges there
    group_n_G = _contiguous_logsumexp(sorted_n_V, len_G)
    top = (depth_e == 0).nonzero().squeeze(1)
    if top.numel():  # first-byte classes in sorted order: STOP, 0, 1, ..., 255
        lse = _contiguous_logsumexp(group_n_G.index_select(0, row_e[top]), first_len)
        cols = torch.cat([lse[:, 1:], lse[:, :1], torch.full_like(lse[:, :1], float("-inf"))], 1)
        out = out.index_copy(0, top, cols)
        sup[top] = torch.cat([first_len[1:], first_len[:1], first_len[:1] * 0]) > 0
    one = (depth_e == 1).nonzero().squeeze(1)
    if one.numel():  # the two-byte groups inside the range, by their second byte
        lo, hi = group_V[lo_e[one]], group_V[hi_e[one] - 1] + 1
        lp, here = _ragged_classes(group_n_G, row_e[one], lo, hi, second_G, lo * 0)
        out, sup[one] = out.index_copy(0, one, lp), here
    deep = (depth_e > 1).nonzero().squeeze(1)
    if deep.numel():  # the sorted range [lo, hi) itself
        d = depth_e[deep]
        lp, here = _ragged_classes(
            sorted_n_V, row_e[deep], lo_e[deep], hi_e[deep], byte_L_V.reshape(-1), d * V
        )
        out, sup[deep] = out.index_copy(0, deep, lp), here
    return out, sup


def _ragged_classes(x_n_W, row_e, lo_e, hi_e, class_flat, class_off_e):
    """``(logp, support)`` [e, 258]: for each event the log-sum-exp of ``x[row, lo:hi]`` by the
    class ``class_flat[class_off + j]`` of each column ``j`` (``STOP`` read as ``END``)."""
    W = x_n_W.shape[1]
    e, K = row_e.shape[0], _DUMP
    width = hi_e - lo_e
    start = torch.cumsum(width, 0) - width
    step = torch.arange(int(width.sum()), device=lo_e.device)
    at = step + torch.repeat_interleave(row_e * W + lo_e - start, width)
    cls = class_flat.index_select(
        0, step + torch.repeat_interleave(class_off_e + lo_e - start, width)
    )
    cls = torch.where(cls == STOP, END, cls.long())  # ends exactly at u
    cls += torch.repeat_interleave(torch.arange(e, device=lo_e.device) * K, width)
    lp = _segment_logsumexp(x_n_W.reshape(-1).index_select(0, at), cls, e * K, 0)
    here = torch.zeros(e * K, dtype=torch.bool, device=lo_e.device)
    return lp.reshape(e, K), here.index_fill_(0, cls, True).reshape(e, K)


def restricted_logprobs(logmass_E_C: torch.Tensor, keep_E_C: torch.Tensor) -> torch.Tensor:
    """log of the distribution renormalized over the kept classes (``-inf`` elsewhere)."""
    lm = logmass_E_C.masked_fill(~keep_E_C, float("-inf"))
    lse = torch.logsumexp(lm, dim=-1, keepdim=True)
    return lm - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


def _prefix_index(trie: ByteTrie, ids_M: torch.Tensor, dev: torch.device) -> tuple:
    """``(perm, ids_M, length, lo, hi)``: the sorted ranges of the pairs' bytes in ``trie``."""
    rank = trie.rank_V.to(dev)[ids_M]
    length = trie.length_V.to(dev)[ids_M]
    lo = trie.lo_L_V.to(dev)[length, rank].long()
    hi = trie.hi_L_V.to(dev)[length, rank].long()
    return trie.perm_V.to(dev), ids_M, length, lo, hi


def prefix_logmass(
    logits_N_V: torch.Tensor,
    rows_R: torch.Tensor,
    trie: ByteTrie,
    ids_M: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """float64 [R, M] ``log M(bytes(ids_M[i]))`` under ``softmax(logits[rows_R[r]] / tau)``.

    Sums over the sorted range of tokens extending the pair's bytes (a float64 cumulative sum,
    differences clamped at 0); byte-less ids give their own probability. Differentiable,
    recomputed a chunk of rows at a time in backward."""
    index = _prefix_index(trie, ids_M, logits_N_V.device)
    chunk = max(1, CHUNK_ELEMS // max(trie.vocab_size, 1))
    R = int(rows_R.shape[0])
    places = [slice(s, s + chunk) for s in range(0, R, chunk)]
    out = torch.empty(R, ids_M.shape[0], dtype=torch.float64, device=logits_N_V.device)
    job = RowJob(
        [rows_R[p] for p in places], places,
        lambda z, _i: (_chunk_prefix(z, *index, temperature),), out,
    )  # fmt: skip
    return row_chunks(logits_N_V, job)[0]


def matched_prefix_gjsd(
    student_logits_N_V: torch.Tensor,
    student_rows_R: torch.Tensor,
    student_trie: ByteTrie,
    student_ids_M: torch.Tensor,
    teacher_logits_N_V: torch.Tensor,
    teacher_rows_R: torch.Tensor,
    teacher_trie: ByteTrie,
    teacher_ids_M: torch.Tensor,
    beta: float,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
) -> torch.Tensor:
    """float64 [R] ``gjsd_measure(prefix_logmass(student), prefix_logmass(teacher), beta)``, a
    chunk of rows at a time: no [R, M] tensor is kept but the teacher's float64 log masses
    (computed once per chunk in forward, no gradient); the student's masses and the divergence
    are recomputed per chunk in backward (``_row_chunks``). Gradient to the student logits only."""
    dev = student_logits_N_V.device
    s_index = _prefix_index(student_trie, student_ids_M, dev)
    t_index = _prefix_index(teacher_trie, teacher_ids_M, teacher_logits_N_V.device)
    V = max(student_trie.vocab_size, teacher_trie.vocab_size, 1)
    chunk = max(1, CHUNK_ELEMS // V)
    R = int(student_rows_R.shape[0])
    places = [slice(s, s + chunk) for s in range(0, R, chunk)]
    teacher: list[torch.Tensor | None] = [None] * len(places)  # each chunk's, from forward

    def fn(z: torch.Tensor, i: int) -> tuple[torch.Tensor]:
        lt = teacher[i]
        if lt is None:
            with torch.no_grad():
                rows = teacher_rows_R[places[i]]
                zt = teacher_logits_N_V.index_select(0, rows)
                lt = teacher[i] = _chunk_prefix(zt, *t_index, teacher_temperature).to(dev)
        return (gjsd_measure(_chunk_prefix(z, *s_index, student_temperature), lt, beta),)

    out = torch.empty(R, dtype=torch.float64, device=dev)
    job = RowJob([student_rows_R[p] for p in places], places, fn, out)
    return row_chunks(student_logits_N_V, job)[0]


def _chunk_prefix(z, perm, ids_M, length, lo, hi, temperature):
    """float64 [r, M] log prefix masses of the gathered logits rows ``z`` [r, V]."""
    z = z.to(torch.promote_types(z.dtype, torch.float32))  # the logits' precision, >= float32
    if temperature != 1.0:
        z = z / temperature
    p = torch.softmax(z, dim=-1)
    c = torch.cumsum(p.index_select(1, perm), 1, dtype=torch.float64)  # c[:, i]: first i + 1
    # mass of the sorted range [lo, hi) = c[hi - 1] - c[lo - 1] (nothing below lo = 0)
    upper = c.index_select(1, (hi - 1).clamp(min=0))
    lower = c.index_select(1, (lo - 1).clamp(min=0))
    mass = torch.where(lo > 0, upper - lower, upper).clamp(min=0.0)
    own = (length == 0).nonzero().squeeze(1)  # byte-less ids: their own probability
    own_p = p.index_select(1, ids_M.index_select(0, own)).to(mass.dtype)
    mass = mass.index_copy(1, own, own_p)
    # a mass of exactly 0 (below the cumulative sum's resolution) is log 0 = -inf with a zero
    # gradient: log of a safe 1 there, so that log's backward never meets 0 / 0 = NaN
    pos = mass > 0
    safe = torch.where(pos, mass, torch.ones((), dtype=mass.dtype))
    return torch.where(pos, torch.log(safe), torch.full((), -math.inf, dtype=mass.dtype))

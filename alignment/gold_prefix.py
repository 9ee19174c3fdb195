"""GOLD-style loss whose matched vocabulary pairs compare the same events: prefix marginals.

In ``alignment.gold`` (TRL's semantics) matched pair ``(s, t)`` compares the student's probability
of the *token* ``s`` with the teacher's probability of the token ``t``. When the two tokens spell
the same bytes ``beta_i`` these are still different events whenever either vocabulary has longer
tokens starting with ``beta_i``: a char-level teacher's ``P("+")`` means "the text goes on with
``+``", the BPE student's ``P("+")`` means "a bare ``+`` token" (its ``+4``, ``+0=1`` ... are the
rest of that event). Here each side's pair value is the *prefix marginal* at the span start

    M(beta_i) = sum_{w : bytes(w) starts with beta_i} P(w)

(for a one-byte ``beta_i`` the exact next-byte marginal, ``alignment.byte_marginal``; a byte-less
special such as the end of turn is its own token). Both sides are at a token boundary at a span
start, so the first anchor rows are used, without the chain-rule scale of the span's other tokens:
a span where the student went off-track (teacher span log-probability -10 .. -22) then weighs no
more than any other, and with ``0 < beta < 1`` each span's term is bounded. The pairs' values are
positive measures (they need not sum to 1); the generalized JSD uses the positive-measure KL
``sum p log(p/q) - p + q`` as in ``alignment.gold``. The unmatched part is ``alignment.gold``'s
ULD (bounded by 2 per span).
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from alignment.byte_marginal import CHUNK_ELEMS, ByteTrie
from alignment.gold import gold_terms
from alignment.spans_math import Anchor, count_spans, span_anchor_positions
from alignment.types import SideLogits, SpanLossTerms
from alignment.uld import Reduction, reduce_rows


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
    checkpointed a chunk of rows at a time."""
    index = _prefix_index(trie, ids_M, logits_N_V.device)
    chunk = max(1, CHUNK_ELEMS // max(trie.vocab_size, 1))
    out = []
    for s in range(0, max(rows_R.shape[0], 1), chunk):
        args = (logits_N_V, rows_R[s : s + chunk], *index, temperature)
        fn = _chunk_prefix
        out.append(
            checkpoint(fn, *args, use_reentrant=False) if logits_N_V.requires_grad else fn(*args)
        )
    return torch.cat(out)


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
    (computed once, no gradient); the student's masses and the divergence are recomputed per
    chunk in backward (activation checkpointing). Gradient to the student logits only."""
    dev = student_logits_N_V.device
    s_index = _prefix_index(student_trie, student_ids_M, dev)
    t_index = _prefix_index(teacher_trie, teacher_ids_M, teacher_logits_N_V.device)
    V = max(student_trie.vocab_size, teacher_trie.vocab_size, 1)
    chunk = max(1, CHUNK_ELEMS // V)
    grad = student_logits_N_V.requires_grad
    out = []
    for s in range(0, student_rows_R.shape[0], chunk):
        with torch.no_grad():
            lt = _chunk_prefix(
                teacher_logits_N_V, teacher_rows_R[s : s + chunk], *t_index, teacher_temperature
            ).to(dev)
        args = (student_logits_N_V, student_rows_R[s : s + chunk], *s_index,
                student_temperature, lt, beta)  # fmt: skip
        fn = _chunk_matched
        out.append(checkpoint(fn, *args, use_reentrant=False) if grad else fn(*args))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=dev)


def _chunk_matched(logits_N_V, rows, perm, ids_M, length, lo, hi, temperature, lt, beta):
    return gjsd_measure(
        _chunk_prefix(logits_N_V, rows, perm, ids_M, length, lo, hi, temperature), lt, beta
    )


def _chunk_prefix(logits_N_V, rows, perm, ids_M, length, lo, hi, temperature):
    z = logits_N_V.index_select(0, rows)
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


def gjsd_measure(la: torch.Tensor, lb: torch.Tensor, beta: float) -> torch.Tensor:
    """[...] generalized JSD of positive measures ``exp(la)``, ``exp(lb)`` over the last axis
    (``alignment.gold``'s convention; zero masses count 0, with finite gradients)."""
    if 0.0 < beta < 1.0:
        # the ``- p + q`` terms cancel (sum m = beta sum b + (1 - beta) sum a) and m > 0 wherever
        # a or b is: few passes over [..., M]; a zero mass's log is floored so 0 * log 0 = 0
        floor = -torch.finfo(la.dtype).max
        a, b = la.exp(), lb.exp()
        m = beta * b + (1 - beta) * a
        lm = torch.log(m.clamp(min=torch.finfo(m.dtype).tiny))
        kl_b = (b * (lb.clamp(min=floor) - lm)).sum(-1)
        kl_a = (a * (la.clamp(min=floor) - lm)).sum(-1)
        return beta * kl_b + (1 - beta) * kl_a
    a_pos, b_pos = la > -math.inf, lb > -math.inf
    zero = torch.zeros((), dtype=la.dtype)
    la, lb = torch.where(a_pos, la, zero), torch.where(b_pos, lb, zero)
    a, b = torch.where(a_pos, la.exp(), zero), torch.where(b_pos, lb.exp(), zero)

    def kl(lp, p, p_pos, lq, q):  # sum p log(p / q) - p + q
        return (torch.where(p_pos, p * (lp - lq), zero) - p + q).sum(-1)

    if beta == 0.0:
        return kl(lb, b, b_pos, la, a)
    return kl(la, a, a_pos, lb, b)


def gold_prefix_terms(
    student: SideLogits,
    teacher: SideLogits,
    student_trie: ByteTrie,
    teacher_trie: ByteTrie,
    matched_student_ids_M: torch.Tensor,
    matched_teacher_ids_M: torch.Tensor,
    beta: float = 0.5,
    top_k: int | None = None,
) -> SpanLossTerms:
    """Per-span matched (GJSD of prefix marginals at the span start) and unmatched (ULD, as in
    ``alignment.gold.gold_terms``) terms; [B, S], zero where ``mask_B_S`` is False."""
    anchor: Anchor = "first"
    base = gold_terms(
        student, teacher, matched_student_ids_M, matched_teacher_ids_M, beta, anchor, top_k
    )
    S = max(count_spans(student.span_B_T), count_spans(teacher.span_B_T))
    mask = base.mask_B_S
    sel = mask.reshape(-1).nonzero().squeeze(1)
    flat, rows = [], []
    for side in (student, teacher):
        B, T, V = side.logits_B_T_V.shape
        pos, _ = span_anchor_positions(side.span_B_T.long(), anchor, S)
        rows.append((torch.arange(B, device=pos.device)[:, None] * T + pos - 1).reshape(-1)[sel])
        flat.append(side.logits_B_T_V.reshape(-1, V))
    matched_R = matched_prefix_gjsd(
        flat[0], rows[0], student_trie, matched_student_ids_M.long(),
        flat[1].detach(), rows[1], teacher_trie, matched_teacher_ids_M.long(),
        beta, student.temperature, teacher.temperature,
    ).to(base.unmatched_B_S.dtype)  # fmt: skip
    zeros = torch.zeros(mask.numel(), dtype=matched_R.dtype, device=mask.device)
    return SpanLossTerms(
        matched_B_S=zeros.index_put((sel,), matched_R).reshape(mask.shape),
        unmatched_B_S=base.unmatched_B_S,
        mask_B_S=mask,
    )


def gold_prefix_loss(
    student: SideLogits,
    teacher: SideLogits,
    student_trie: ByteTrie,
    teacher_trie: ByteTrie,
    matched_student_ids_M: torch.Tensor,
    matched_teacher_ids_M: torch.Tensor,
    beta: float = 0.5,
    matched_weight: float = 1.0,
    unmatched_weight: float = 1.0,
    top_k: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """``matched_weight * GJSD(prefix marginals) + unmatched_weight * ULD`` per span, reduced
    (``mean`` over spans with tokens on both sides, ``sum``, ``none``)."""
    terms = gold_prefix_terms(
        student, teacher, student_trie, teacher_trie, matched_student_ids_M,
        matched_teacher_ids_M, beta, top_k,
    )  # fmt: skip
    per_span = matched_weight * terms.matched_B_S + unmatched_weight * terms.unmatched_B_S
    return reduce_rows(per_span, terms.mask_B_S, reduction)

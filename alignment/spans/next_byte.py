"""The next-byte loss between two models with different tokenizers: the one home of next-byte
(byte-class masses of each side's next-token distribution: the private ``_byte_mass``).

At every byte ``j`` of the completion (and at the stop) both sides give a distribution over the
next byte (257 classes: 256 bytes + stop):

* a side at a token boundary: the exact marginal of its next-token distribution (first byte);
* the teacher inside one of its tokens: its within-token conditional (the tokens that extend the
  bytes it already wrote, by their next byte); a char-level teacher is never inside a token;
* the student inside its token ``w*`` after ``u = x[:ell]`` (``ell >= 1``): each byte ``c`` its
  token can go on with gets the mass of the tokens extending ``u + c`` (``C(u + c)``, read from the
  row that predicted ``w*``); class 256 becomes ``OTHER``: any byte (or the stop) the token cannot
  go on with, which the student can only produce by having *ended* a token earlier on the path,
  the longest such token ``x[:k]`` (``k <= ell``; a longest-match reading of its tokenization):

      q(c)     ∝ C(u + c)                                          (c extends the token)
      q(OTHER) ∝ R = P(token = x[:k]) * prod_{i=k..ell-1} p_t,i(x_i)

  (the ended path must still write ``x[k:ell]``: the teacher's probabilities ``p_t,i`` of those
  bytes stand in for the forward passes the student never made). The teacher's side lumps the
  same way: its probabilities of the extending bytes, and their complement as ``OTHER``.

  Why this form and not the plain within-token conditional or the teacher's own distribution over
  the other bytes: measured on the arithmetic pair in ``docs/results/compare-arithmetic-cross.md``
  ("How the next-byte loss got here"); lumped into ``OTHER``, the ended mass is only asked to
  equal the teacher's probability that the text leaves the token.

Both distributions are restricted to the classes both can produce there (renormalized); positions
with fewer than two such classes carry no information and are skipped. The divergence is the
generalized JSD (``beta``: 0 forward KL(teacher || student), 1 reverse KL, in between bounded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from alignment.divergence import gjsd_log
from alignment.errors import AlignmentError
from alignment.spans._byte_mass import (
    END,
    NUM_CLASSES,
    ByteEvents,
    _select,
    class_logprobs,
    restricted_logprobs,
    side_events,
)
from alignment.tokens.byte_trie import STOP, ByteTrie, byte_trie
from alignment.types import SideLogits

Reduction = Literal["mean", "sum", "none"]
FLOOR = -1e30  # log of "no mass" kept finite, so gradients stay finite
OTHER = STOP  # inside a student token: the bytes (and the stop) the token cannot go on with


@dataclass(frozen=True)
class ByteTerms:
    """Per-event next-byte divergences (events with at least two common classes).

    Attributes:
        divergence_E: the generalized JSD per event (differentiable w.r.t. the student logits).
        batch_E, span_E: where each event is.
        exact_E: bool, both sides at a token boundary (both distributions exact marginals).
        student_logprobs_E_C, teacher_logprobs_E_C: the compared distributions (``-inf``
            outside the common support), for diagnostics and tests.
    """

    divergence_E: torch.Tensor
    batch_E: torch.Tensor
    span_E: torch.Tensor
    exact_E: torch.Tensor
    student_logprobs_E_C: torch.Tensor
    teacher_logprobs_E_C: torch.Tensor


def _check(student: SideLogits, teacher: SideLogits, beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise AlignmentError(f"beta={beta} must lie in [0, 1] (0: forward KL, 1: reverse KL)")
    for side, name in ((student, "student"), (teacher, "teacher")):
        if side.logits_B_T_V.dim() != 3 or side.span_B_T.shape != side.logits_B_T_V.shape[:2]:
            raise AlignmentError(
                f"{name}: logits {tuple(side.logits_B_T_V.shape)} must be [B, T, V] with span "
                f"ids {tuple(side.span_B_T.shape)} [B, T]"
            )
        if side.span_B_T.numel() and bool((side.span_B_T[:, 0] >= 0).any()):
            raise AlignmentError(f"{name}: token 0 is in a span but nothing predicts it; give -1")
    if student.logits_B_T_V.shape[0] != teacher.logits_B_T_V.shape[0]:
        raise AlignmentError("student and teacher batches differ in size")


def _num_spans(span_B_T: torch.Tensor) -> int:
    return int(span_B_T.max()) + 1 if span_B_T.numel() else 0


def _inside_token(
    s_lp: torch.Tensor, s_sup: torch.Tensor, lt: torch.Tensor, t_sup: torch.Tensor,
    ev: ByteEvents, trie: ByteTrie,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """``(log_q_s, sup_s, log_q_t, sup_t)`` [E, 257] of both sides (module docstring): unchanged
    at depth 0; inside a student token, column ``OTHER`` (256) takes the bytes (and the stop) the
    token cannot go on with: the ended path ``R`` on the student's side, their total on the
    teacher's.

    ``s_lp``/``s_sup``: [E, 258] student columns (``class_logprobs``); ``lt``/``t_sup``: [E, 257]
    the teacher's normalized log-probs and support at the same bytes."""
    depth = ev.depth_E
    rank = trie.rank_V.to(depth.device)[ev.token_E]
    x_E = trie.byte_L_V.to(depth.device)[depth, rank].long()  # the sampled byte
    lt_x = lt.gather(1, x_E[:, None]).squeeze(1).clamp(min=-1e4)
    # one row per student token (its events are consecutive, depth 0, 1, ...): [G, L]
    group = torch.cumsum((depth == 0).long(), 0) - 1
    G, L = (
        int(group.max()) + 1 if group.numel() else 0,
        int(depth.max()) + 1 if depth.numel() else 1,
    )
    ltx = lt.new_zeros(G, L).index_put((group, depth), torch.where(depth > 0, lt_x, 0.0))
    cum = torch.cumsum(ltx, 1) - ltx  # sum_{i=1..ell-1} log p_t,i(x_i)
    has_end = torch.zeros(G, L, dtype=torch.bool, device=depth.device)
    has_end = has_end.index_put((group, depth), s_sup[:, END])
    log_end = torch.full((G, L), FLOOR, dtype=s_lp.dtype, device=s_lp.device)
    log_end = log_end.index_put((group, depth), s_lp[:, END])
    # k*: the deepest depth <= ell where a token ends on the path (the longest match), 0 if none
    steps = torch.arange(L, device=depth.device).expand(G, L)
    k_star = torch.cummax(torch.where(has_end, steps, 0), 1).values  # [G, L]
    log_r = log_end.gather(1, k_star) + cum - cum.gather(1, k_star)
    log_r, has_r = log_r[group, depth], (k_star > 0)[group, depth]  # [E]
    cont, ext = s_lp[:, :NUM_CLASSES], s_sup[:, :NUM_CLASSES]
    inside = (depth > 0)[:, None]
    other = torch.zeros_like(ext)
    other[:, OTHER] = True
    log_q_s = torch.where(inside & other, log_r[:, None], cont)
    sup_s = torch.where(inside, ext | (other & has_r[:, None]), ext)
    rest = t_sup & ~ext  # teacher bytes the student's token cannot go on with
    lt_other = torch.logsumexp(lt.masked_fill(~rest, float("-inf")), -1).clamp(min=FLOOR)
    log_q_t = torch.where(inside & other, lt_other[:, None], torch.where(inside & ~ext, FLOOR, lt))
    sup_t = torch.where(inside, (t_sup & ext) | (other & rest.any(-1, keepdim=True)), t_sup)
    return log_q_s, sup_s, log_q_t, sup_t


def next_byte_terms(
    student: SideLogits,
    teacher: SideLogits,
    student_trie: ByteTrie,
    teacher_trie: ByteTrie,
    beta: float = 0.5,
    within_tokens: bool = True,
) -> ByteTerms:
    """Next-byte divergences between the two sides at every aligned byte (module docstring).

    Args:
        student, teacher: each side's logits, tokens and span ids (``alignment.SideLogits``, same
            ``B``; the same spans cover the same bytes on both sides).
        student_trie, teacher_trie: ``byte_trie`` of each side's tokenizer for its logit width.
        beta: generalized JSD coefficient in [0, 1].
        within_tokens: compare at every byte (default); False keeps only the positions where both
            sides are at a token boundary (span starts and the stop: exact marginals only; weak
            when the student merges the bytes that matter into one token).

    Returns:
        ``ByteTerms`` over the events that count. Spans whose two sides disagree on their number
        of bytes (or of stop tokens) are skipped. The teacher gets no gradient.
    """
    _check(student, teacher, beta)
    S = max(_num_spans(student.span_B_T), _num_spans(teacher.span_B_T))
    s_ev, s_count = side_events(student, student_trie, S)
    t_ev, t_count = side_events(teacher, teacher_trie, S)
    valid_B_S = (s_count == t_count) & (s_count > 0)
    s_ev = _select(s_ev, valid_B_S[s_ev.batch_E, s_ev.span_E])
    t_ev = _select(t_ev, valid_B_S[t_ev.batch_E, t_ev.span_E])
    if not within_tokens:
        exact = (s_ev.depth_E == 0) & (t_ev.depth_E == 0)
        s_ev, t_ev = _select(s_ev, exact), _select(t_ev, exact)
    Vs, Vt = student.logits_B_T_V.shape[-1], teacher.logits_B_T_V.shape[-1]
    s_lp, s_sup = class_logprobs(
        student.logits_B_T_V.reshape(-1, Vs), s_ev, student_trie, student.temperature
    )
    with torch.no_grad():
        t_lp, t_sup = class_logprobs(
            teacher.logits_B_T_V.detach().reshape(-1, Vt), t_ev, teacher_trie, teacher.temperature
        )
        t_sup = t_sup[:, :NUM_CLASSES]
        lt = restricted_logprobs(t_lp[:, :NUM_CLASSES].to(s_lp.dtype), t_sup).clamp(min=FLOOR)
    log_q, s_sup, lt, t_sup = _inside_token(
        s_lp.clamp(min=FLOOR), s_sup, lt, t_sup, s_ev, student_trie
    )
    common = s_sup & t_sup
    informative = common.sum(-1) >= 2
    ls = restricted_logprobs(log_q[informative], common[informative])
    lt_i = restricted_logprobs(lt[informative], common[informative])
    exact = (s_ev.depth_E == 0) & (t_ev.depth_E == 0)
    return ByteTerms(
        divergence_E=gjsd_log(ls, lt_i, beta),
        batch_E=s_ev.batch_E[informative],
        span_E=s_ev.span_E[informative],
        exact_E=exact[informative],
        student_logprobs_E_C=ls,
        teacher_logprobs_E_C=lt_i,
    )


def next_byte_loss(
    student: SideLogits,
    teacher: SideLogits,
    student_trie: ByteTrie,
    teacher_trie: ByteTrie,
    beta: float = 0.5,
    within_tokens: bool = True,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """``next_byte_terms`` reduced: ``mean`` over the counted events (0 if none), ``sum``, or
    ``none`` ([E])."""
    d = next_byte_terms(student, teacher, student_trie, teacher_trie, beta, within_tokens)
    d = d.divergence_E
    if reduction == "none":
        return d
    if reduction == "sum":
        return d.sum()
    if reduction == "mean":
        return d.sum() / max(d.shape[0], 1)
    raise AlignmentError(f"reduction={reduction!r} must be 'mean', 'sum' or 'none'")


__all__ = ["STOP", "ByteTerms", "ByteTrie", "byte_trie", "next_byte_loss", "next_byte_terms"]

"""Cross-tokenizer losses over aligned spans: pure ULD and the GOLD-style hybrid.

Each side gives its logits on its own tokens and a span id per token (``alignment.SideLogits``).
For every span ``k`` that has tokens on both sides, each side's *span distribution* is formed as
in ``alignment.spans_math`` (anchor token's next-token distribution at temperature ``tau``, times
the chain-rule probability of the span's other tokens, unnormalized):

    a_k = P_student(rest of span k) * softmax(student_logits[anchor_s - 1] / tau_s)   [V_s]
    b_k = P_teacher(rest of span k) * softmax(teacher_logits[anchor_t - 1] / tau_t)   [V_t]

* ``span_uld_loss``: ``ULD(a_k, b_k)`` (sorted L1, ``alignment.uld``).
* ``gold_loss``: ``matched_weight * GJSD_beta(a_k[ms], b_k[mt])
  + unmatched_weight * ULD(a_k without ms, b_k without mt)``, where ``ms[i]``/``mt[i]`` are the
  student/teacher ids of the ``i``-th matched vocabulary pair (same bytes; ``alignment.vocab_map``).
  ``GJSD_beta`` is the generalized JSD in GKD's/TRL's convention (``beta = 0``: KL(teacher ||
  student), ``1``: KL(student || teacher), else ``beta KL(t||m) + (1-beta) KL(s||m)``,
  ``m = beta t + (1-beta) s``), written with the KL for positive measures
  ``sum p log(p/q) - p + q`` because restricted span distributions do not sum to 1: it is >= 0,
  0 iff equal, the plain KL for distributions, and for ``0 < beta < 1`` the extra terms cancel.
  The weights are explicit (TRL's adaptive choice is ``matched_weight = M / V_t``).

Memory: no [spans x V] tensor is kept. A custom autograd function walks the span rows a chunk at
a time, gathers only the anchor rows, sorts on numpy's SIMD sort (CPU), and keeps for backward one
int8 sign per student vocabulary entry (+ one float per matched pair); the backward recomputes
the softmax from the student logits. The teacher gets no gradient. The chain-rule scale uses
log-probs of the non-anchor tokens only (a 1:1 span needs none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from alignment.errors import AlignmentError
from alignment.spans_math import Anchor, count_spans, span_anchor_positions
from alignment.types import SideLogits, SpanLossTerms
from alignment.uld import Reduction, reduce_rows, sorted_l1_rows, topk_l1_rows

CHUNK_ELEMS = (
    1 << 22
)  # rows per chunk = CHUNK_ELEMS // vocabulary (16 MiB of float32 per row block)


@dataclass(frozen=True)
class _Spec:
    student_temperature: float
    teacher_temperature: float
    beta: float
    matched_student_M: torch.Tensor | None
    matched_teacher_M: torch.Tensor | None
    top_k: int | None
    chunk_rows: int


def _log_rows(logits_N_V: torch.Tensor, rows: torch.Tensor, tau: float, dtype) -> torch.Tensor:
    z = logits_N_V.index_select(0, rows).to(dtype)
    return torch.log_softmax(z / tau if tau != 1.0 else z, dim=-1)


def _gjsd_rows(
    la: torch.Tensor, lb: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized JSD of positive measures ``a = exp(la)``, ``b = exp(lb)`` per row [R, M].

    Returns ``(J_R, h_R_M)`` with ``h = a * dJ/da`` (what the softmax backward needs).
    """
    a, b = la.exp(), lb.exp()
    zero = torch.zeros((), dtype=la.dtype)
    if beta == 0.0:  # KL(b || a) + sum(a - b)
        J = torch.where(b > 0, b * (lb - la), zero) - b + a
        return J.sum(-1), a - b
    if beta == 1.0:  # KL(a || b) + sum(b - a)
        J = torch.where(a > 0, a * (la - lb), zero) - a + b
        return J.sum(-1), torch.where(a > 0, a * (la - lb), zero)
    lm = torch.logaddexp(la + math.log1p(-beta), lb + math.log(beta))
    ta = torch.where(a > 0, a * (la - lm), zero)
    tb = torch.where(b > 0, b * (lb - lm), zero)
    return (beta * tb + (1 - beta) * ta).sum(-1), (1 - beta) * ta


class _SpanDivergence(torch.autograd.Function):
    """Per-span ``(matched_R, unmatched_R)`` from anchor rows; backward to student logits/scale."""

    @staticmethod
    def forward(ctx, s_logits, s_scale_R, t_logits, t_scale_R, s_rows_R, t_rows_R, spec: _Spec):  # type: ignore[override]
        dt = s_scale_R.dtype
        R, Vs = s_rows_R.shape[0], s_logits.shape[-1]
        ms, mt = spec.matched_student_M, spec.matched_teacher_M
        sign = torch.empty(R, Vs, dtype=torch.int8, device=s_logits.device)
        h_M = None if ms is None else torch.empty(R, ms.shape[0], dtype=dt, device=s_logits.device)
        out_m, out_u = s_scale_R.new_zeros(R), s_scale_R.new_zeros(R)
        for r0 in range(0, R, spec.chunk_rows):
            sl = slice(r0, r0 + spec.chunk_rows)
            log_a = _log_rows(s_logits, s_rows_R[sl], spec.student_temperature, dt)
            log_a = log_a + s_scale_R[sl].detach().unsqueeze(-1)
            log_b = _log_rows(t_logits, t_rows_R[sl], spec.teacher_temperature, dt)
            log_b = log_b + t_scale_R[sl].unsqueeze(-1)
            a, b = log_a.exp(), log_b.exp()
            if ms is not None and mt is not None:
                out_m[sl], h_M[sl] = _gjsd_rows(log_a[:, ms], log_b[:, mt], spec.beta)  # type: ignore[index]
                a.index_fill_(1, ms, 0.0)  # matched entries leave the ULD part; zeros sort last
                b.index_fill_(1, mt, 0.0)
            if spec.top_k is None:
                out_u[sl], sg, _ = sorted_l1_rows(a, b, grad_p=True, grad_q=False)
            else:
                out_u[sl], sg = topk_l1_rows(a, b, spec.top_k)
            if ms is not None:
                sg.index_fill_(1, ms, 0)  # zeroed entries are constants, not variables
            sign[sl] = sg
        ctx.save_for_backward(s_logits, s_scale_R, s_rows_R, sign, h_M)
        ctx.spec = spec
        return out_m, out_u

    @staticmethod
    def backward(ctx, g_m_R, g_u_R):  # type: ignore[override]
        s_logits, s_scale_R, s_rows_R, sign, h_M = ctx.saved_tensors
        spec: _Spec = ctx.spec
        dt = s_scale_R.dtype
        grad_logits = torch.zeros_like(s_logits)
        grad_scale = torch.zeros_like(s_scale_R)
        for r0 in range(0, s_rows_R.shape[0], spec.chunk_rows):
            sl = slice(r0, r0 + spec.chunk_rows)
            log_p = _log_rows(s_logits, s_rows_R[sl], spec.student_temperature, dt)
            p = log_p.exp()
            a = (log_p + s_scale_R[sl].unsqueeze(-1)).exp()
            h = a * sign[sl].to(dt) * g_u_R[sl].to(dt).unsqueeze(-1)  # h = a * dL/da
            if h_M is not None:
                h.index_add_(1, spec.matched_student_M, h_M[sl] * g_m_R[sl].to(dt).unsqueeze(-1))
            h_sum = h.sum(-1, keepdim=True)
            dz = (h - p * h_sum) / spec.student_temperature  # softmax backward, then 1/tau
            grad_logits.index_add_(0, s_rows_R[sl], dz.to(grad_logits.dtype))
            grad_scale[sl] = h_sum.squeeze(-1)
        return grad_logits, grad_scale, None, None, None, None, None


def _check_side(side: SideLogits, name: str) -> None:
    shape = side.logits_B_T_V.shape
    if side.logits_B_T_V.dim() != 3 or side.input_ids_B_T.shape != shape[:2]:
        raise AlignmentError(
            f"{name}: logits {tuple(shape)} must be [B, T, V] and input_ids "
            f"{tuple(side.input_ids_B_T.shape)} must be [B, T]"
        )
    if side.span_B_T.shape != shape[:2]:
        raise AlignmentError(f"{name}: span ids {tuple(side.span_B_T.shape)} must be [B, T]")
    if side.temperature <= 0:
        raise AlignmentError(f"{name}: temperature={side.temperature} must be > 0")
    if side.span_B_T.numel() and bool((side.span_B_T[:, 0] >= 0).any()):
        raise AlignmentError(f"{name}: token 0 is in a span but nothing predicts it; give it -1")


def _side_rows(side: SideLogits, S: int, anchor: Anchor, dtype):
    """``(rows_B_S, log_scale_B_S, mask_B_S)``: flat logits row of each anchor's distribution and
    the chain-rule log-prob of the span's other tokens (computed on those tokens' rows only)."""
    span, ids = side.span_B_T.long(), side.input_ids_B_T
    B, T, V = side.logits_B_T_V.shape
    pos_B_S, mask_B_S = span_anchor_positions(span, anchor, S)
    # [B, T]; the padding column keeps gather valid when S == 0 (tokens with span -1 are unused)
    anchor_of_token = torch.nn.functional.pad(pos_B_S, (0, 1)).gather(1, span.clamp(min=0))
    rest = (span >= 0) & (torch.arange(T, device=span.device) != anchor_of_token)
    b, t = rest.nonzero(as_tuple=True)
    z = side.logits_B_T_V.reshape(B * T, V)[b * T + t - 1].to(dtype) / side.temperature
    lp = z.gather(1, ids[b, t].unsqueeze(1)).squeeze(1) - torch.logsumexp(z, dim=-1)
    scale = torch.zeros(B * S, dtype=dtype, device=lp.device).index_add(0, b * S + span[b, t], lp)
    rows_B_S = torch.arange(B, device=span.device).unsqueeze(1) * T + pos_B_S - 1
    return rows_B_S, scale.reshape(B, S), mask_B_S


def _check_matched(ms: torch.Tensor, mt: torch.Tensor, Vs: int, Vt: int) -> None:
    if ms.dim() != 1 or ms.shape != mt.shape:
        raise AlignmentError(
            f"matched ids must be two 1-D tensors of the same length, got {tuple(ms.shape)} "
            f"and {tuple(mt.shape)}"
        )
    for ids, V, name in ((ms, Vs, "student"), (mt, Vt, "teacher")):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= V):
            raise AlignmentError(
                f"matched {name} ids must lie in [0, {V}); got [{int(ids.min())}, "
                f"{int(ids.max())}]: build the vocabulary map from the same tokenizers"
            )


def gold_terms(
    student: SideLogits,
    teacher: SideLogits,
    matched_student_ids_M: torch.Tensor | None = None,
    matched_teacher_ids_M: torch.Tensor | None = None,
    beta: float = 0.5,
    anchor: Anchor = "first",
    top_k: int | None = None,
) -> SpanLossTerms:
    """Per-span matched (GJSD) and unmatched (ULD) terms; see the module docstring.

    Args:
        student, teacher: each side's logits, tokens and span ids (same ``B``, same spans).
        matched_student_ids_M, matched_teacher_ids_M: int64 [M] vocabulary pairs; ``None`` (or
            ``M = 0``) makes the whole vocabulary unmatched (pure ULD).
        beta: generalized JSD coefficient in [0, 1].
        anchor: ``first`` or ``last`` token of a span carries its distribution.
        top_k: compare only the top ``k`` unmatched values exactly (``uld_loss_topk``'s bound).

    Returns:
        ``SpanLossTerms`` with [B, S] terms; ``S`` = the larger span count of the two sides.
        Differentiable with respect to the student logits only.
    """
    _check_side(student, "student")
    _check_side(teacher, "teacher")
    B, _, Vs = student.logits_B_T_V.shape
    Vt = teacher.logits_B_T_V.shape[-1]
    if teacher.logits_B_T_V.shape[0] != B:
        raise AlignmentError(f"student batch {B} != teacher batch {teacher.logits_B_T_V.shape[0]}")
    if not 0.0 <= beta <= 1.0:
        raise AlignmentError(f"beta={beta} must lie in [0, 1] (0: forward KL, 1: reverse KL)")
    if top_k is not None and top_k < 1:
        raise AlignmentError(f"top_k={top_k} must be >= 1 or None (exact ULD)")
    ms = mt = None
    if matched_student_ids_M is not None and matched_teacher_ids_M is not None:
        ms, mt = matched_student_ids_M.long(), matched_teacher_ids_M.long()
        _check_matched(ms, mt, Vs, Vt)
        if ms.numel() == 0:
            ms = mt = None
    elif (matched_student_ids_M is None) != (matched_teacher_ids_M is None):
        raise AlignmentError(
            "pass both matched_student_ids_M and matched_teacher_ids_M, or neither"
        )
    S = max(count_spans(student.span_B_T), count_spans(teacher.span_B_T))
    dtype = torch.promote_types(student.logits_B_T_V.dtype, torch.float32)
    s_rows, s_scale, s_mask = _side_rows(student, S, anchor, dtype)
    t_rows, t_scale, t_mask = _side_rows(teacher, S, anchor, dtype)
    mask = s_mask & t_mask
    sel = mask.reshape(-1).nonzero().squeeze(1)
    spec = _Spec(
        student.temperature, teacher.temperature, beta, ms, mt, top_k,
        max(1, CHUNK_ELEMS // max(Vs, Vt)),
    )  # fmt: skip
    matched_R, unmatched_R = _SpanDivergence.apply(
        student.logits_B_T_V.reshape(-1, Vs),
        s_scale.reshape(-1)[sel],
        teacher.logits_B_T_V.detach().reshape(-1, Vt),
        t_scale.detach().reshape(-1)[sel].to(dtype),
        s_rows.reshape(-1)[sel],
        t_rows.reshape(-1)[sel],
        spec,
    )
    zeros = torch.zeros(B * S, dtype=dtype, device=mask.device)
    return SpanLossTerms(
        matched_B_S=zeros.index_put((sel,), matched_R).reshape(B, S),
        unmatched_B_S=zeros.index_put((sel,), unmatched_R).reshape(B, S),
        mask_B_S=mask,
    )


def gold_loss(
    student: SideLogits,
    teacher: SideLogits,
    matched_student_ids_M: torch.Tensor,
    matched_teacher_ids_M: torch.Tensor,
    beta: float = 0.5,
    matched_weight: float = 1.0,
    unmatched_weight: float = 1.0,
    anchor: Anchor = "first",
    top_k: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """GOLD-style loss ``matched_weight * GJSD + unmatched_weight * ULD`` per span, reduced.

    ``mean``: sum over spans with tokens on both sides / their number (0 if none); ``sum``;
    ``none``: [B, S]. Arguments as in ``gold_terms``.
    """
    terms = gold_terms(
        student, teacher, matched_student_ids_M, matched_teacher_ids_M, beta, anchor, top_k
    )
    per_span = matched_weight * terms.matched_B_S + unmatched_weight * terms.unmatched_B_S
    return reduce_rows(per_span, terms.mask_B_S, reduction)


def span_uld_loss(
    student: SideLogits,
    teacher: SideLogits,
    anchor: Anchor = "first",
    top_k: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Pure ULD between span distributions (no vocabulary map). Reduction as in ``gold_loss``."""
    terms = gold_terms(student, teacher, None, None, 0.5, anchor, top_k)
    return reduce_rows(terms.unmatched_B_S, terms.mask_B_S, reduction)

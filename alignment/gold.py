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
  This holds where the span's two anchor tokens are themselves a matched pair: then ``a_k[ms[i]]``
  and ``b_k[mt[i]]`` are the same event (``ms[i]`` followed by the same rest of the span). Where
  the anchors spell different bytes (a merged student token ``+4`` against a teacher's ``+``
  ``4``), ``a_k["+"]`` is "the span is ``+`` alone" but ``b_k["+"]`` is "``+`` then ``4``": the
  vocabulary pairs would push the student off its merged tokens. There the only known pair is
  the two anchors (both equal the span's probability): ``ms = [anchor_s]``, ``mt = [anchor_t]``.
  ``GJSD_beta`` is the generalized JSD in GKD's/TRL's convention (``beta = 0``: KL(teacher ||
  student), ``1``: KL(student || teacher), else ``beta KL(t||m) + (1-beta) KL(s||m)``,
  ``m = beta t + (1-beta) s``), written with the KL for positive measures
  ``sum p log(p/q) - p + q`` because restricted span distributions do not sum to 1: it is >= 0,
  0 iff equal, the plain KL for distributions, and for ``0 < beta < 1`` the extra terms cancel.
  The weights are explicit (TRL's adaptive choice is ``matched_weight = M / V_t``).

Memory and speed: no [spans x V] tensor is kept. A custom autograd function walks the span rows
a chunk at a time (``CHUNK_ELEMS``), gathers only the rows it needs (anchor rows, and the rows
predicting a span's other tokens for the chain-rule scale; a 1:1 span needs none), sorts with
numpy's SIMD sort on CPU (``alignment.uld``), and keeps for backward one int8 sign per student
vocabulary entry per span (+ one float per matched pair). The backward recomputes the softmax of
those rows and writes each gradient row once. The teacher gets no gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from alignment.errors import AlignmentError
from alignment.spans_math import Anchor, count_spans, span_anchor_positions
from alignment.types import SideLogits, SpanLossTerms
from alignment.uld import Reduction, reduce_rows, sorted_l1_rows, topk_l1_rows

CHUNK_ELEMS = 1 << 22  # rows per chunk = CHUNK_ELEMS // vocabulary (16 MiB of float32 a block)


@dataclass(frozen=True)
class _Spec:
    student_temperature: float
    teacher_temperature: float
    beta: float
    matched_student_M: torch.Tensor | None  # sorted (fast column gathers), pairs kept
    matched_teacher_M: torch.Tensor | None
    top_k: int | None
    chunk_rows: int
    keep_student_V: torch.Tensor | None = None  # 1 on unmatched student ids, 0 on matched
    keep_teacher_V: torch.Tensor | None = None
    same_anchor_R: torch.Tensor | None = None  # bool: the two anchor tokens are a matched pair


@dataclass(frozen=True)
class _Plan:
    """Flat logits rows one side needs, for the ``R`` spans that count (index tensors only).

    ``anchor_rows_R``: the row holding each span's anchor distribution; ``anchor_ids_R``: the
    anchor token itself. ``rest_rows_N``,
    ``rest_ids_N``, ``rest_span_N``: for every other token of those spans, the row that predicts
    it, its id, and its span's index in ``0 .. R - 1`` (for the chain-rule scale).
    """

    anchor_rows_R: torch.Tensor
    anchor_ids_R: torch.Tensor
    rest_rows_N: torch.Tensor
    rest_ids_N: torch.Tensor
    rest_span_N: torch.Tensor


def _rows(logits, rows: torch.Tensor, tau: float, dtype) -> torch.Tensor:
    """[c, V] the given logits rows divided by ``tau``, a fresh float32 (or float64) copy."""
    z = logits.index_select(0, rows).to(dtype)
    return z.div_(tau) if tau != 1.0 else z


def _log_softmax_rows(logits, rows: torch.Tensor, tau: float, dtype) -> torch.Tensor:
    return torch.log_softmax(_rows(logits, rows, tau, dtype), dim=-1)


def _softmax_rows(logits, rows: torch.Tensor, tau: float, dtype) -> torch.Tensor:
    return torch.softmax(_rows(logits, rows, tau, dtype), dim=-1)


def _unscale(dz: torch.Tensor, tau: float) -> torch.Tensor:
    """The chain rule through ``z = logits / tau`` (in place)."""
    return dz.div_(tau) if tau != 1.0 else dz


def _chunks(n: int, size: int):
    return (slice(i, i + size) for i in range(0, n, size))


def _rest_scale(logits, plan: _Plan, R: int, tau: float, dtype, chunk: int) -> torch.Tensor:
    """[R] chain-rule log-prob of each span's non-anchor tokens (no autograd)."""
    scale = torch.zeros(R, dtype=dtype, device=logits.device)
    for sl in _chunks(plan.rest_rows_N.shape[0], chunk):  # log p = z[id] - logsumexp(z)
        z = _rows(logits, plan.rest_rows_N[sl], tau, dtype)
        lp = z.gather(1, plan.rest_ids_N[sl].unsqueeze(1)).squeeze(1) - torch.logsumexp(z, -1)
        scale.index_add_(0, plan.rest_span_N[sl], lp)
    return scale


def _gjsd_rows(
    la: torch.Tensor, lb: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized JSD of positive measures ``a = exp(la)``, ``b = exp(lb)`` per row [R, M].

    Returns ``(J_R, h_R_M)`` with ``h = a * dJ/da`` (what the softmax backward needs). Terms with
    a zero measure count 0 (``0 log 0 = 0``).
    """
    zero = torch.zeros((), dtype=la.dtype)
    if beta == 0.0:  # KL(b || a) + sum(a - b)
        J = torch.where(b > 0, b * (lb - la), zero) - b + a
        return J.sum(-1), a - b
    if beta == 1.0:  # KL(a || b) + sum(b - a)
        ta = torch.where(a > 0, a * (la - lb), zero)
        return (ta - a + b).sum(-1), ta
    lm = torch.log((1 - beta) * a + beta * b)  # the mixture m = beta t + (1 - beta) s
    ta = torch.where(a > 0, a * (la - lm), zero)
    tb = torch.where(b > 0, b * (lb - lm), zero)
    return (beta * tb + (1 - beta) * ta).sum(-1), (1 - beta) * ta


def _span_rows(logits, plan: _Plan, scale_R, sl: slice, tau: float, dtype, need_log: bool):
    """``(log_a or None, a)`` [c, V]: span distributions of the spans in ``sl``."""
    if need_log:
        log_a = _log_softmax_rows(logits, plan.anchor_rows_R[sl], tau, dtype)
        log_a.add_(scale_R[sl].unsqueeze(-1))
        return log_a, log_a.exp()
    a = _softmax_rows(logits, plan.anchor_rows_R[sl], tau, dtype)
    return None, a.mul_(scale_R[sl].exp().unsqueeze(-1))


class _SpanDivergence(torch.autograd.Function):
    """Per-span ``(matched_R, unmatched_R)``; gradient to the student logits only."""

    @staticmethod
    def forward(ctx, s_logits, t_logits, s_plan: _Plan, t_plan: _Plan, spec: _Spec):  # type: ignore[override]
        dt = torch.promote_types(s_logits.dtype, torch.float32)
        R, Vs, ch = s_plan.anchor_rows_R.shape[0], s_logits.shape[-1], spec.chunk_rows
        ms, mt = spec.matched_student_M, spec.matched_teacher_M
        s_scale = _rest_scale(s_logits, s_plan, R, spec.student_temperature, dt, ch)
        t_scale = _rest_scale(t_logits, t_plan, R, spec.teacher_temperature, dt, ch)
        sign = torch.empty(R, Vs, dtype=torch.int8, device=s_logits.device)
        h_M = None if ms is None else torch.empty(R, ms.shape[0], dtype=dt, device=s_logits.device)
        h_pair = s_scale.new_zeros(R)  # ``a * dJ/da`` of the anchor pair (anchors that differ)
        out_m, out_u = s_scale.new_zeros(R), s_scale.new_zeros(R)
        for sl in _chunks(R, ch):
            need_log = ms is not None
            log_a, a = _span_rows(
                s_logits, s_plan, s_scale, sl, spec.student_temperature, dt, need_log
            )
            log_b, b = _span_rows(
                t_logits, t_plan, t_scale, sl, spec.teacher_temperature, dt, need_log
            )
            if ms is not None and mt is not None and h_M is not None:
                assert log_a is not None and log_b is not None
                assert spec.same_anchor_R is not None
                la, lb = log_a.index_select(1, ms), log_b.index_select(1, mt)
                j_vocab, h_vocab = _gjsd_rows(la, lb, la.exp(), lb.exp(), spec.beta)
                # anchors spelling different bytes: a vocabulary pair is not the same event
                # (the rests of the span differ), only the two sampled anchors are
                same = spec.same_anchor_R[sl]
                sa, ta = s_plan.anchor_ids_R[sl, None], t_plan.anchor_ids_R[sl, None]
                la1, lb1 = log_a.gather(1, sa), log_b.gather(1, ta)
                j_pair, h1 = _gjsd_rows(la1, lb1, la1.exp(), lb1.exp(), spec.beta)
                out_m[sl] = torch.where(same, j_vocab, j_pair)
                h_M[sl] = h_vocab * same.unsqueeze(-1)
                h_pair[sl] = torch.where(same, 0.0, h1.squeeze(-1))
                keep_a = _keep_rows(spec.keep_student_V, same, sa)  # compared entries leave ULD
                a.mul_(keep_a)  # zeros sort last
                b.mul_(_keep_rows(spec.keep_teacher_V, same, ta))
            if spec.top_k is None:
                out_u[sl], sg, _ = sorted_l1_rows(a, b, grad_p=True, grad_q=False)
            else:
                out_u[sl], sg = topk_l1_rows(a, b, spec.top_k)
            if ms is not None:  # zeroed entries are constants, not variables
                sg.mul_(keep_a.to(torch.int8))
            sign[sl] = sg
        ctx.save_for_backward(s_logits, s_scale, sign, h_M, h_pair)
        ctx.plan, ctx.spec = s_plan, spec
        return out_m, out_u

    @staticmethod
    def backward(ctx, g_m_R, g_u_R):  # type: ignore[override]
        s_logits, s_scale, sign, h_M, h_pair = ctx.saved_tensors
        plan, spec = ctx.plan, ctx.spec
        dt, tau, ch = s_scale.dtype, spec.student_temperature, spec.chunk_rows
        # every row is written once (anchor and rest rows are distinct tokens' predictors), so
        # only the rows no span uses are zeroed: no separate pass over the whole gradient
        grad = torch.empty_like(s_logits)
        unused = torch.ones(grad.shape[0], dtype=torch.bool, device=grad.device)
        unused[plan.anchor_rows_R] = False
        unused[plan.rest_rows_N] = False
        grad.index_fill_(0, unused.nonzero().squeeze(1), 0.0)
        grad_scale = torch.zeros_like(s_scale)  # dL/d(log scale) per span
        for sl in _chunks(plan.anchor_rows_R.shape[0], ch):
            p = _softmax_rows(s_logits, plan.anchor_rows_R[sl], tau, dt)
            # h = a * dL/da with a = p * exp(scale); the ULD part is a * sign * g_u
            h = p * (s_scale[sl].exp() * g_u_R[sl].to(dt)).unsqueeze(-1)
            h.mul_(sign[sl])
            if h_M is not None:
                h.index_add_(1, spec.matched_student_M, h_M[sl] * g_m_R[sl].to(dt).unsqueeze(-1))
                h_1 = (h_pair[sl] * g_m_R[sl].to(dt)).unsqueeze(-1)
                h.scatter_add_(1, plan.anchor_ids_R[sl, None], h_1)
            h_sum = h.sum(-1, keepdim=True)
            dz = h.sub_(p.mul_(h_sum))  # softmax backward: h - p * sum(h)
            grad.index_copy_(0, plan.anchor_rows_R[sl], _unscale(dz, tau).to(grad.dtype))
            grad_scale[sl] = h_sum.squeeze(-1)
        for sl in _chunks(plan.rest_rows_N.shape[0], ch):  # scale = sum of rest token log-probs
            g_N = grad_scale[plan.rest_span_N[sl]].unsqueeze(-1)
            p = _softmax_rows(s_logits, plan.rest_rows_N[sl], tau, dt)
            dz = p.mul_(-g_N).scatter_add_(1, plan.rest_ids_N[sl].unsqueeze(1), g_N)
            grad.index_copy_(0, plan.rest_rows_N[sl], _unscale(dz, tau).to(grad.dtype))
        return grad, None, None, None, None


def _keep_rows(keep_V: torch.Tensor, same_c: torch.Tensor, anchor_c_1: torch.Tensor):
    """[c, V] 0/1 entries left to the ULD part: ``keep_V`` where the anchors are a matched pair,
    else every entry but the anchor token's."""
    keep = torch.where(same_c.unsqueeze(-1), keep_V, torch.ones_like(keep_V))
    at_anchor = torch.where(same_c, keep_V[anchor_c_1[:, 0]], 0.0)
    return keep.scatter(1, anchor_c_1, at_anchor.unsqueeze(-1))


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


def _side_plan(side: SideLogits, S: int, anchor: Anchor, sel_B_S: torch.Tensor) -> _Plan:
    """Index tensors of one side for the spans where ``sel_B_S`` (no [.., V] work here)."""
    span = side.span_B_T.long()
    B, T = span.shape
    pos_B_S, _ = span_anchor_positions(span, anchor, S)
    # [B, T]; the padding column keeps gather valid when S == 0 (tokens with span -1 are unused)
    anchor_of_token = torch.nn.functional.pad(pos_B_S, (0, 1)).gather(1, span.clamp(min=0))
    rest = (span >= 0) & (torch.arange(T, device=span.device) != anchor_of_token)
    b, t = rest.nonzero(as_tuple=True)
    index_of_span = torch.full((B * S,), -1, dtype=torch.long, device=span.device)
    sel = sel_B_S.reshape(-1).nonzero().squeeze(1)
    index_of_span[sel] = torch.arange(sel.shape[0], device=span.device)
    rest_span = index_of_span[b * S + span[b, t]]
    keep = rest_span >= 0  # rest tokens of spans that count
    b, t = b[keep], t[keep]
    rows_B_S = torch.arange(B, device=span.device).unsqueeze(1) * T + pos_B_S - 1
    return _Plan(
        anchor_rows_R=rows_B_S.reshape(-1)[sel],
        anchor_ids_R=side.input_ids_B_T.long().gather(1, pos_B_S).reshape(-1)[sel],
        rest_rows_N=b * T + t - 1,
        rest_ids_N=side.input_ids_B_T[b, t].long(),
        rest_span_N=rest_span[keep],
    )


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


def _with_matched(spec: _Spec, ms, mt, Vs: int, Vt: int, like: torch.Tensor) -> _Spec:
    """Pairs sorted by student id (contiguous-ish gathers) and 0/1 masks of the unmatched ids."""
    order = torch.argsort(ms)
    dtype = torch.promote_types(like.dtype, torch.float32)
    keep_s = torch.ones(Vs, dtype=dtype, device=like.device)
    keep_t = torch.ones(Vt, dtype=dtype, device=like.device)
    keep_s[ms], keep_t[mt] = 0.0, 0.0
    return dataclasses.replace(
        spec, matched_student_M=ms[order], matched_teacher_M=mt[order],
        keep_student_V=keep_s, keep_teacher_V=keep_t,
    )  # fmt: skip


def _validate(
    student: SideLogits,
    teacher: SideLogits,
    ms: torch.Tensor | None,
    mt: torch.Tensor | None,
    beta: float,
    top_k: int | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Check the arguments of ``gold_terms``; the matched ids as int64, or ``None`` for none."""
    _check_side(student, "student")
    _check_side(teacher, "teacher")
    B, Vs, Vt = (
        student.logits_B_T_V.shape[0],
        student.logits_B_T_V.shape[-1],
        teacher.logits_B_T_V.shape[-1],
    )
    if teacher.logits_B_T_V.shape[0] != B:
        raise AlignmentError(f"student batch {B} != teacher batch {teacher.logits_B_T_V.shape[0]}")
    if not 0.0 <= beta <= 1.0:
        raise AlignmentError(f"beta={beta} must lie in [0, 1] (0: forward KL, 1: reverse KL)")
    if top_k is not None and top_k < 1:
        raise AlignmentError(f"top_k={top_k} must be >= 1 or None (exact ULD)")
    if (ms is None) != (mt is None):
        raise AlignmentError(
            "pass both matched_student_ids_M and matched_teacher_ids_M, or neither"
        )
    if ms is None or mt is None:
        return None, None
    ms, mt = ms.long(), mt.long()
    _check_matched(ms, mt, Vs, Vt)
    return (ms, mt) if ms.numel() else (None, None)


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
    ms, mt = _validate(student, teacher, matched_student_ids_M, matched_teacher_ids_M, beta, top_k)
    B, _, Vs = student.logits_B_T_V.shape
    Vt = teacher.logits_B_T_V.shape[-1]
    S = max(count_spans(student.span_B_T), count_spans(teacher.span_B_T))
    mask = (
        span_anchor_positions(student.span_B_T.long(), anchor, S)[1]
        & span_anchor_positions(teacher.span_B_T.long(), anchor, S)[1]
    )  # spans with tokens on both sides
    spec = _Spec(
        student.temperature, teacher.temperature, beta, ms, mt, top_k,
        max(1, CHUNK_ELEMS // max(Vs, Vt)),
    )  # fmt: skip
    s_plan, t_plan = _side_plan(student, S, anchor, mask), _side_plan(teacher, S, anchor, mask)
    if ms is not None and mt is not None:
        spec = _with_matched(spec, ms, mt, Vs, Vt, student.logits_B_T_V)
        s_to_t = torch.full((Vs,), -1, dtype=torch.long, device=ms.device)
        s_to_t[ms] = mt
        same = s_to_t[s_plan.anchor_ids_R.to(ms.device)] == t_plan.anchor_ids_R.to(ms.device)
        spec = dataclasses.replace(spec, same_anchor_R=same.to(s_plan.anchor_ids_R.device))
    matched_R, unmatched_R = _SpanDivergence.apply(
        student.logits_B_T_V.reshape(-1, Vs),
        teacher.logits_B_T_V.detach().reshape(-1, Vt),
        s_plan,
        t_plan,
        spec,
    )
    dtype = matched_R.dtype
    sel = mask.reshape(-1).nonzero().squeeze(1)
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

"""The row kernel behind ``alignment.spans.gold`` (private): span divergences a chunk of logits
rows at a time.

``gold_terms`` turns spans into index tensors (``RowPlan``: which flat logits rows each side
needs) and calls ``SpanDivergence``, a ``torch.autograd.Function`` whose forward and backward
work on a chunk of rows at a time, so no [spans x V] tensor is kept:

* forward, per side: the chain-rule log-probability of each span's other tokens (log-softmax of
  the rows predicting them, one entry read per row), then the anchor rows' softmax scaled by
  it, the GJSD over matched columns (``gold_loss``), and the ULD row kernel
  (``alignment.spans.uld.sorted_l1_rows``: numpy's SIMD sort on CPU). Saved for backward: one int8
  sign per student vocabulary entry per span, the per-span log scale, and with matched pairs one
  float per pair per span.
* backward (student only; the teacher gets no gradient): the softmax of each student row used is
  recomputed, the softmax Jacobian-vector product ``dz = h - p * sum(h)`` (``h = a * dL/da``)
  formed in place, and each gradient row written once into the fresh gradient; rows no span
  uses are zero-filled.

Speed on CPU comes from writing as few fresh pages as possible: every [chunk x V] temporary
(gathered rows, softmax, ``h``) lives in a per-thread buffer reused between calls (``_buffer``),
and the softmaxes write into them (``out=``). A fresh [chunk x V] tensor costs its page faults
each time the allocator has handed the memory back to the system; the one fresh [B*T x V]
tensor left is the gradient itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from alignment.cpu import buffer, fresh_empty, run_chunks
from alignment.spans.uld import sorted_l1_rows, topk_l1_rows


@dataclass(frozen=True)
class KernelSpec:
    """What ``SpanDivergence`` computes (no tensors of [.., V] per span)."""

    student_temperature: float
    teacher_temperature: float
    beta: float
    matched_student_M: torch.Tensor | None  # sorted by student id, pairs kept
    matched_teacher_M: torch.Tensor | None
    top_k: int | None
    chunk_rows: int
    same_anchor_R: torch.Tensor | None = None  # bool: the two anchor tokens are a matched pair


@dataclass(frozen=True)
class RowPlan:
    """Flat logits rows one side needs, for the ``R`` spans that count (index tensors only).

    ``anchor_rows_R``: the row holding each span's anchor distribution; ``anchor_ids_R``: the
    anchor token itself. ``rest_rows_N``, ``rest_ids_N``, ``rest_span_N``: for every other token
    of those spans, the row that predicts it, its id, and its span's index in ``0 .. R - 1`` (for
    the chain-rule scale). Anchor and rest rows are distinct (each row predicts one token).
    """

    anchor_rows_R: torch.Tensor
    anchor_ids_R: torch.Tensor
    rest_rows_N: torch.Tensor
    rest_ids_N: torch.Tensor
    rest_span_N: torch.Tensor


def _buffer(slot: str, shape: tuple[int, int], like: torch.Tensor, dtype) -> torch.Tensor:
    """[c, V] uninitialized, reused by this thread between calls (``alignment.cpu.buffer``)."""
    return buffer(slot, shape, dtype, like.device)


def _gather(logits: torch.Tensor, rows: torch.Tensor, tau: float, dtype, slot: str):
    """[c, V] ``logits[rows] / tau`` in ``dtype``, in the buffer ``slot``."""
    out = _buffer(slot, (rows.shape[0], logits.shape[-1]), logits, dtype)
    if logits.dtype == dtype:
        torch.index_select(logits, 0, rows, out=out)
    else:  # bfloat16/float16 logits: gather in their dtype, upcast into the buffer
        out.copy_(logits.index_select(0, rows))
    return out.div_(tau) if tau != 1.0 else out


def _softmax(logits, rows: torch.Tensor, tau: float, dtype, slot: str) -> torch.Tensor:
    """[c, V] ``softmax(logits[rows] / tau)`` in the buffer ``slot + ".p"``."""
    z = _gather(logits, rows, tau, dtype, slot + ".z")
    return torch.softmax(z, -1, out=_buffer(slot + ".p", tuple(z.shape), logits, dtype))


def _chunks(n: int, size: int):
    return (slice(i, i + size) for i in range(0, n, size))


def rest_log_scale(logits, plan: RowPlan, R: int, tau: float, dtype, chunk: int, slot: str):
    """[R] chain-rule log-probability of each span's non-anchor tokens (no autograd)."""
    N = plan.rest_rows_N.shape[0]
    logp_N = torch.empty(N, dtype=dtype, device=logits.device)

    def one(sl: slice) -> None:  # log p[id] of each rest row
        z = _gather(logits, plan.rest_rows_N[sl], tau, dtype, slot + ".z")
        ls = torch.log_softmax(z, -1, out=_buffer(slot + ".p", tuple(z.shape), logits, dtype))
        logp_N[sl] = ls.gather(1, plan.rest_ids_N[sl, None])[:, 0]

    run_chunks(one, N, chunk, logits.device)
    scale = torch.zeros(R, dtype=dtype, device=logits.device)
    return scale.index_add_(0, plan.rest_span_N, logp_N)


def _span_rows(logits, plan: RowPlan, scale_R, sl: slice, tau, dtype, need_log: bool, slot):
    """``(log_a or None, a)`` [c, V] span distributions of the spans in ``sl`` (in buffers)."""
    z = _gather(logits, plan.anchor_rows_R[sl], tau, dtype, slot + ".z")
    out = _buffer(slot + ".p", tuple(z.shape), logits, dtype)
    if need_log:  # two fused softmaxes beat one and an exp over the row
        log_a = torch.log_softmax(z, -1, out=out).add_(scale_R[sl, None])
        a = torch.softmax(z, -1, out=_buffer(slot + ".q", tuple(z.shape), logits, dtype))
        return log_a, a.mul_(scale_R[sl].exp()[:, None])
    return None, torch.softmax(z, -1, out=out).mul_(scale_R[sl].exp()[:, None])


def _zero_where_nan(t: torch.Tensor) -> torch.Tensor:
    """``t`` with NaN set to 0 in place (infinities kept): ``torch.where(x > 0, t, 0)`` for the
    terms ``x * (log x - log y)`` below, whose value at ``x = 0`` is NaN (``-inf * 0``) or
    already 0 (``log x`` finite: an underflowed ``x``), and finite or ``+inf`` (``y = 0``) at
    ``x > 0``; ~10x cheaper than ``torch.where`` on CPU."""
    return t.nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)


def gjsd_rows(
    la: torch.Tensor, lb: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized JSD of positive measures ``a = exp(la)``, ``b = exp(lb)`` per row [R, M].

    Returns ``(J_R, h_R_M)`` with ``h = a * dJ/da`` (what the softmax backward needs). Terms with
    a zero measure count 0 (``0 log 0 = 0``). Few [R, M] temporaries: differences are scaled in
    place, and the linear terms are summed apart (``sum(a - b) = sum(a) - sum(b)``).
    """
    if beta == 0.0:  # KL(b || a) + sum(a - b)
        tb = _zero_where_nan((lb - la).mul_(b))
        return tb.sum(-1) - b.sum(-1) + a.sum(-1), a - b
    if beta == 1.0:  # KL(a || b) + sum(b - a)
        ta = _zero_where_nan((la - lb).mul_(a))
        return ta.sum(-1) - a.sum(-1) + b.sum(-1), ta
    lm = torch.mul(a, 1 - beta).add_(b, alpha=beta).log_()  # the mixture m = beta t + (1-beta) s
    ta = _zero_where_nan((la - lm).mul_(a))  # finite where a > 0 (m >= (1 - beta) a > 0)
    tb = _zero_where_nan(lm.neg_().add_(lb).mul_(b))
    return beta * tb.sum(-1) + (1 - beta) * ta.sum(-1), ta.mul_(1 - beta)


def _keep_masks(cols_M: torch.Tensor, V: int, dtype) -> torch.Tensor:
    """[2, V]: row 0 all ones, row 1 zero on the matched columns ``cols_M`` (for
    ``_zero_compared``)."""
    keep = torch.ones(2, V, dtype=dtype, device=cols_M.device)
    keep[1, cols_M] = 0
    return keep


def _zero_compared(x: torch.Tensor, same_c: torch.Tensor, keep_2V, anchor_c: torch.Tensor):
    """Zero, in place, the entries of ``x`` [c, V] the GJSD compares (they leave the ULD part):
    the matched columns where the anchors are a matched pair (``keep_2V[1]``), else the anchor
    only. Multiplying by a 0/1 row (a streaming pass) beats scattered index fills."""
    if bool(same_c.all()):
        x.mul_(keep_2V[1])
    elif bool(same_c.any()):
        x.mul_(keep_2V[same_c.long()])
    other = (~same_c).nonzero().squeeze(1)
    x.index_put_((other, anchor_c[other]), torch.zeros((), dtype=x.dtype, device=x.device))
    return x


def _matched_terms(log_a, log_b, a, b, s_plan, t_plan, spec: KernelSpec, sl: slice, keep):
    """``(J_c, h_c_M, h_pair_c)`` of the spans in ``sl``; zeroes the compared entries of ``a``
    and ``b`` (they sort last in the ULD part)."""
    ms, mt, same = spec.matched_student_M, spec.matched_teacher_M, spec.same_anchor_R
    assert ms is not None and mt is not None and same is not None
    same = same[sl]
    la, lb = log_a.index_select(1, ms), log_b.index_select(1, mt)
    j_vocab, h_vocab = gjsd_rows(la, lb, a.index_select(1, ms), b.index_select(1, mt), spec.beta)
    # anchors spelling different bytes: a vocabulary pair is not the same event (the rests of
    # the span differ), only the two sampled anchors are
    sa, ta = s_plan.anchor_ids_R[sl], t_plan.anchor_ids_R[sl]
    la1, lb1 = log_a.gather(1, sa[:, None]), log_b.gather(1, ta[:, None])
    j_pair, h1 = gjsd_rows(la1, lb1, la1.exp(), lb1.exp(), spec.beta)
    _zero_compared(a, same, keep[0], sa)
    _zero_compared(b, same, keep[1], ta)
    h_pair = torch.where(same, 0.0, h1[:, 0])
    return torch.where(same, j_vocab, j_pair), h_vocab * same[:, None], h_pair


class SpanDivergence(torch.autograd.Function):
    """Per-span ``(matched_R, unmatched_R)``; gradient to the student logits only.

    Inputs: flat student logits [B*Ts, Vs], flat teacher logits [B*Tt, Vt], the two
    ``RowPlan``s (same ``R``) and a ``KernelSpec``.
    """

    @staticmethod
    def forward(ctx, s_logits, t_logits, s_plan: RowPlan, t_plan: RowPlan, spec: KernelSpec):  # type: ignore[override]
        dt = torch.promote_types(s_logits.dtype, torch.float32)
        R, Vs, ch = s_plan.anchor_rows_R.shape[0], s_logits.shape[-1], spec.chunk_rows
        tau_s, tau_t, ms = (
            spec.student_temperature,
            spec.teacher_temperature,
            spec.matched_student_M,
        )
        s_scale = rest_log_scale(s_logits, s_plan, R, tau_s, dt, ch, "s")
        t_scale = rest_log_scale(t_logits, t_plan, R, tau_t, dt, ch, "t")
        sign = fresh_empty((R, Vs), torch.int8, s_logits.device)
        h_M = None if ms is None else torch.empty(R, ms.shape[0], dtype=dt, device=s_logits.device)
        h_pair = s_scale.new_zeros(R)  # ``a * dJ/da`` of the anchor pair (anchors that differ)
        out_m, out_u = s_scale.new_zeros(R), s_scale.new_zeros(R)
        keep = None
        if ms is not None and spec.matched_teacher_M is not None:  # student, teacher, signs
            Vt, mt = t_logits.shape[-1], spec.matched_teacher_M
            keep = (
                _keep_masks(ms, Vs, dt),
                _keep_masks(mt, Vt, dt),
                _keep_masks(ms, Vs, torch.int8),
            )

        def chunk(sl: slice) -> None:  # writes only the rows ``sl`` of the outputs
            log_a, a = _span_rows(s_logits, s_plan, s_scale, sl, tau_s, dt, ms is not None, "s")
            log_b, b = _span_rows(t_logits, t_plan, t_scale, sl, tau_t, dt, ms is not None, "t")
            if h_M is not None:
                out_m[sl], h_M[sl], h_pair[sl] = _matched_terms(
                    log_a, log_b, a, b, s_plan, t_plan, spec, sl, keep
                )
            if spec.top_k is None:
                out_u[sl], sg, _ = sorted_l1_rows(a, b, grad_p=True, grad_q=False)
            else:
                out_u[sl], sg = topk_l1_rows(a, b, spec.top_k)
            if h_M is not None:  # zeroed (compared) entries are constants of the ULD part
                assert spec.same_anchor_R is not None and keep is not None
                _zero_compared(sg, spec.same_anchor_R[sl], keep[2], s_plan.anchor_ids_R[sl])
            sign[sl] = sg

        run_chunks(chunk, R, ch, s_logits.device)
        ctx.save_for_backward(s_logits, s_scale, sign, h_M, h_pair)
        ctx.plan, ctx.spec = s_plan, spec
        return out_m, out_u

    @staticmethod
    def backward(ctx, g_m_R, g_u_R):  # type: ignore[override]
        s_logits, s_scale, sign, h_M, h_pair = ctx.saved_tensors
        plan, spec = ctx.plan, ctx.spec
        # every row is written once (anchor and rest rows are distinct tokens' predictors), so
        # only the rows no span uses are zeroed: no separate pass over the whole gradient
        grad = fresh_empty(tuple(s_logits.shape), s_logits.dtype, s_logits.device)
        unused = torch.ones(grad.shape[0], dtype=torch.bool, device=grad.device)
        unused[plan.anchor_rows_R] = False
        unused[plan.rest_rows_N] = False
        grad.index_fill_(0, unused.nonzero().squeeze(1), 0.0)
        grad_scale = _anchor_grads(grad, s_logits, s_scale, sign, h_M, h_pair, g_m_R, g_u_R, ctx)
        tau, dt = spec.student_temperature, s_scale.dtype

        def rest(sl: slice) -> None:  # writes only the gradient rows of the rest rows ``sl``
            # scale = sum of the rest tokens' log-probs: dz = g (onehot(id) - p) / tau
            g_N = (grad_scale[plan.rest_span_N[sl]] / tau)[:, None]
            p = _softmax(s_logits, plan.rest_rows_N[sl], tau, dt, "s")
            dz = p.mul_(-g_N).scatter_add_(1, plan.rest_ids_N[sl, None], g_N)
            grad.index_copy_(0, plan.rest_rows_N[sl], dz.to(grad.dtype))

        run_chunks(rest, plan.rest_rows_N.shape[0], spec.chunk_rows, grad.device)
        return grad, None, None, None, None


def _anchor_grads(grad, s_logits, s_scale, sign, h_M, h_pair, g_m_R, g_u_R, ctx) -> torch.Tensor:
    """Write the anchor rows' gradient into ``grad``; return ``dL/d(log scale)`` per span [R].

    With ``a = p * exp(scale)`` and ``h = a * dL/da`` (ULD part: ``a * sign * g_u``; matched
    part: ``h_M * g_m`` on the matched columns, ``h_pair * g_m`` at the anchor), the softmax
    backward is ``dz = (h - p * sum(h)) / tau`` and ``dL/d(log scale) = sum(h)``.
    """
    plan, spec = ctx.plan, ctx.spec
    dt, tau = s_scale.dtype, spec.student_temperature
    grad_scale = torch.zeros_like(s_scale)

    def chunk(sl: slice) -> None:  # writes only the anchor rows ``sl`` and grad_scale[sl]
        p = _softmax(s_logits, plan.anchor_rows_R[sl], tau, dt, "s")
        h = torch.mul(p, sign[sl], out=_buffer("s.z", tuple(p.shape), s_logits, dt))
        coef = s_scale[sl].exp() * g_u_R[sl].to(dt)  # h = coef * p * sign so far
        if h_M is None:  # dz = coef (p sign - p sum(p sign)) / tau: one scaling pass at the end
            h_sum = h.sum(-1, keepdim=True)
            dz = h.sub_(p.mul_(h_sum)).mul_((coef / tau)[:, None])
            grad_scale[sl] = coef * h_sum[:, 0]
        else:
            g_m = g_m_R[sl].to(dt)
            h.mul_(coef[:, None]).index_add_(1, spec.matched_student_M, h_M[sl] * g_m[:, None])
            h.scatter_add_(1, plan.anchor_ids_R[sl, None], (h_pair[sl] * g_m)[:, None])
            h_sum = h.sum(-1, keepdim=True)
            dz = h.sub_(p.mul_(h_sum))
            dz = dz.div_(tau) if tau != 1.0 else dz
            grad_scale[sl] = h_sum[:, 0]
        grad.index_copy_(0, plan.anchor_rows_R[sl], dz.to(grad.dtype))

    run_chunks(chunk, plan.anchor_rows_R.shape[0], spec.chunk_rows, grad.device)
    return grad_scale

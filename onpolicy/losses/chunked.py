"""Chunked divergence from hidden states and LM heads, never materializing full [tokens x V] logits.

The student's and the teacher's logits are projected for a block of ``block_size`` counted tokens
at a time (``[block, V]`` per model, full vocabulary rows, so ``log_softmax`` is exact in one pass),
the divergence and its closed-form gradient with respect to the student's logits are computed there
(``kernels.DIVERGENCES[...].value_and_grad``), and the block's logits are dropped. The teacher's
side of a block is a ``BlockTarget``: ``DenseTarget`` here (hidden states + LM head), ``TopKTarget``
in ``chunked_topk`` (top-k ids + log-probs + tail); both share the block loop ``chunked_loss``.

Gradients (student hidden, student head weight and bias; the teacher gets none):
- ``reduction="mean" | "sum"`` (a scalar): the gradients are accumulated *during the forward pass*
  (one projection per model and two gradient matmuls per block, no recomputation) and scaled by the
  incoming scalar gradient in backward; computed only when autograd will need them.
- ``reduction="none"`` (per-token values): backward recomputes each block's logits and weighs each
  token's gradient by its incoming gradient.

Logits of a head: ``z = softcap(logit_scale * (hidden @ weight.T + bias)) / temperature`` with
``softcap(y) = c * tanh(y / c)`` when ``softcap = c`` is set (Gemma-style), else the identity.
All math in float32 (float64 if the student's weight or hidden states are float64); a bf16/fp16 head
is upcast once per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from onpolicy.errors import DataError, TrainingError
from onpolicy.losses.kernels import DivergenceKernel, get_kernel
from onpolicy.losses.reduce import as_bool_mask, check_reduction, check_temperature

Tensor = torch.Tensor

TARGET_BLOCK_ELEMENTS = 1 << 24
"""Default block: about 16M logits (64 MB in float32) per [block, V] buffer, i.e. 256 tokens at
V = 65,536 (a block holds about 6 such buffers at its peak). Larger blocks run the matmuls faster
(better use of each pass over the LM heads) at the cost of memory."""


@dataclass(frozen=True)
class LMHead:
    """A language-model head: ``logits = softcap(logit_scale * (hidden @ weight.T + bias))``.

    Attributes:
        weight: ``[V, H]`` projection matrix.
        bias: optional ``[V]`` bias.
        logit_scale: multiplier on the logits (Cohere-style ``logit_scale``), 1.0 for most models.
        softcap: final-logit soft-capping ``c`` (``c * tanh(logits / c)``, Gemma-style) or None.
    """

    weight: Tensor
    bias: Tensor | None = None
    logit_scale: float = 1.0
    softcap: float | None = None

    @classmethod
    def from_linear(
        cls, linear: torch.nn.Linear, logit_scale: float = 1.0, softcap: float | None = None
    ) -> LMHead:
        return cls(linear.weight, linear.bias, logit_scale, softcap)


class BlockTarget(Protocol):
    """The teacher's side of a chunked loss: what it holds per counted row (``teacher``: a tuple of
    tensors whose first axis is the row, plus any shared ones), and, for one block of ``n`` rows,
    the divergence against the student's log-probs ``[n, V]`` and its gradient with respect to the
    student's (scaled, capped, tempered) logits ``z`` ``[n, V]``. Implemented here for a dense
    teacher (hidden states + LM head) and in ``chunked_topk`` for a top-k teacher."""

    def rows(self, teacher: tuple, sl: slice, rows: Tensor | None) -> tuple:
        """The block's teacher tensors (rows ``sl`` of the counted rows; ``rows``: their indices
        in the full tensors, None when every row counts)."""
        ...

    def prepare(self, block: tuple, inv_t: float, buf_z: Tensor, buf_t: Tensor) -> Any:
        """Teacher-side work before the student's logits are made (``buf_z``, ``buf_t``: [n, V]
        scratch; ``buf_z`` is the student's after this returns)."""
        ...

    def divergence(
        self, log_ps: Tensor, prepared: Any, kernel: DivergenceKernel, coef: float,
        with_grad: bool, buf_t: Tensor,
    ) -> tuple[Tensor, Tensor | None]:  # fmt: skip
        """Per-row values [n] and, with ``with_grad``, ``dL/dz`` [n, V] (may live in ``buf_t``
        or ``log_ps``'s buffer; valid until the next block)."""
        ...


def select_rows(teacher: tuple, sl: slice, rows: Tensor | None) -> tuple:
    """Every tensor of ``teacher`` at rows ``sl`` (or ``rows``)."""
    return tuple(t[sl] if rows is None else t.index_select(0, rows) for t in teacher)


@dataclass(frozen=True)
class DenseTarget:
    """A dense teacher: ``teacher = (hidden [M, H_t], weight [V, H_t], bias [V] | None)``, its
    logits projected a block at a time like the student's."""

    scale: float = 1.0
    softcap: float | None = None

    def rows(self, teacher: tuple, sl: slice, rows: Tensor | None) -> tuple:
        h_t, w_t, b_t = teacher
        return (*select_rows((h_t,), sl, rows), w_t, b_t)

    def prepare(self, block: tuple, inv_t: float, buf_z: Tensor, buf_t: Tensor) -> Tensor:
        z_t, _ = _logits(*block, self.scale, self.softcap, inv_t, buf_z)
        return torch.log_softmax(z_t, dim=-1, out=buf_t)  # log p_t [n, V]

    def divergence(self, log_ps, prepared, kernel, coef, with_grad, buf_t):
        if not with_grad:
            return kernel.value(log_ps, prepared, coef), None
        return kernel.value_and_grad(log_ps, prepared, coef)


@dataclass(frozen=True)
class _Spec:
    """Everything a block needs besides tensors."""

    kernel: DivergenceKernel
    coef: float
    inv_temperature: float
    student_scale: float
    student_softcap: float | None
    block_size: int
    target: BlockTarget


def _logits(h, w, b, scale: float, cap: float | None, inv_t: float, out: Tensor):
    """Block logits ``z`` [n, V] (in ``out`` when there is no softcap) and, with a softcap,
    ``tanh`` [n, V] (in ``out``, kept for the gradient)."""
    y = torch.mm(h, w.t(), out=out) if b is None else torch.addmm(b, h, w.t(), out=out)
    if cap is None:
        return y.mul_(scale * inv_t), None
    th = y.mul_(scale / cap).tanh_()
    return th * (cap * inv_t), th


def _workspace(n: int, vocab: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Three [n, V] scratch buffers, reused by every block of one call: each block would otherwise
    allocate (and, on CPU, page-fault in) about six buffers of this size."""
    return tuple(like.new_empty((n, vocab)) for _ in range(3))


def _block(h_s, w_s, b_s, teacher_block: tuple, spec: _Spec, weight_n: Tensor | None, work):
    """Per-token values [n] and, when ``weight_n`` [n] is given, ``d(sum weight_n * L)/dy`` [n, V]
    for the student's raw projection ``y = h_s @ w_s.T + b_s``. ``work``: ``_workspace`` buffers
    (the gradient is returned in one of them, valid until the next block)."""
    n = h_s.shape[0]
    buf_z, buf_t, buf_s = (w[:n] for w in work)
    prepared = spec.target.prepare(teacher_block, spec.inv_temperature, buf_z, buf_t)
    z_s, th = _logits(
        h_s, w_s, b_s, spec.student_scale, spec.student_softcap, spec.inv_temperature, buf_z
    )
    log_ps = torch.log_softmax(z_s, dim=-1, out=buf_s)
    del z_s
    with_grad = weight_n is not None
    value, g = spec.target.divergence(log_ps, prepared, spec.kernel, spec.coef, with_grad, buf_t)
    if g is None:  # g = dL/dz [n, V]
        return value, None
    del log_ps, prepared
    g.mul_((weight_n * (spec.student_scale * spec.inv_temperature)).unsqueeze(-1))
    if th is not None:  # d(c * tanh(y / c))/dy = 1 - tanh^2
        g.mul_(th.mul_(th).neg_().add_(1.0))
    return value, g


def _run(h_s, w_s, b_s, teacher: tuple, index, spec: _Spec, weight_N, needs: tuple):
    """Loop over blocks of the counted rows ``index`` [n] of ``h_s`` [M, H_s] and the teacher's
    per-row tensors (all M rows when None). Returns the per-token values [n] and the gradients
    named in ``needs`` (hidden [M, H_s], zero on rows not counted; weight [V, H_s]; bias [V]) of
    ``sum(weight_N * L)``, or None for each gradient not needed."""
    need_h, need_w, need_b = needs if weight_N is not None else (False, False, False)
    n = h_s.shape[0] if index is None else index.shape[0]
    values = h_s.new_empty(n)
    grad_h = None
    if need_h:
        grad_h = torch.empty_like(h_s) if index is None else torch.zeros_like(h_s)
    grad_w = torch.zeros_like(w_s) if need_w and n == 0 else None
    grad_b = torch.zeros_like(b_s) if need_b and n == 0 else None
    want_grad = need_h or need_w or need_b
    work = _workspace(min(n, spec.block_size), w_s.shape[0], h_s) if n else None
    for start in range(0, n, spec.block_size):
        sl = slice(start, min(n, start + spec.block_size))
        rows = None if index is None else index[sl]
        hb_s = h_s[sl] if rows is None else h_s.index_select(0, rows)
        wn = weight_N[sl] if want_grad else None
        value, g = _block(hb_s, w_s, b_s, spec.target.rows(teacher, sl, rows), spec, wn, work)
        values[sl] = value
        if g is None:
            continue
        if need_h and rows is None:
            torch.mm(g, w_s, out=grad_h[sl])
        elif need_h:
            grad_h.index_copy_(0, rows, torch.mm(g, w_s))
        if need_w:  # the first block writes, the others accumulate (no zero fill)
            grad_w = torch.mm(g.t(), hb_s) if grad_w is None else grad_w.addmm_(g.t(), hb_s)
        if need_b:
            grad_b = g.sum(0) if grad_b is None else grad_b.add_(g.sum(0))
    return values, grad_h, grad_w, grad_b


class _ChunkedSum(torch.autograd.Function):
    """``sum_i weight_N[i] * L_i`` (scalar) and the per-token values ``L`` [n] (no gradient).
    Gradients are computed in forward and scaled by the incoming scalar gradient in backward; they
    are handed over (not copied) so the weight gradient exists once: backward runs only once."""

    @staticmethod
    def forward(ctx: Any, h_s, w_s, b_s, index, weight_N, spec: _Spec, *teacher):
        needs = tuple(ctx.needs_input_grad[:3])
        values, gh, gw, gb = _run(h_s, w_s, b_s, teacher, index, spec, weight_N, needs)
        ctx.grads = [gh, gw, gb]
        ctx.num_teacher = len(teacher)
        ctx.mark_non_differentiable(values)
        return (weight_N * values).sum(), values

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, _grad_values: Tensor | None):
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise TrainingError(
                "chunked_divergence computes its gradients once; call it again instead of "
                "backpropagating twice (retain_graph)"
            )
        if bool(grad_total != 1.0):
            grads = [None if g is None else g.mul_(grad_total) for g in grads]
        return (*grads, None, None, None, *([None] * ctx.num_teacher))


class _ChunkedPerToken(torch.autograd.Function):
    """Per-token values ``L`` [n]; backward recomputes each block weighted by the incoming [n]."""

    @staticmethod
    def forward(ctx: Any, h_s, w_s, b_s, index, spec: _Spec, *teacher):
        none = (False, False, False)
        values, *_ = _run(h_s, w_s, b_s, teacher, index, spec, None, none)
        ctx.save_for_backward(h_s, w_s, b_s, index, *teacher)
        ctx.spec = spec
        return values

    @staticmethod
    def backward(ctx: Any, grad_values: Tensor):
        h_s, w_s, b_s, index, *teacher = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        grad_values = grad_values.to(h_s.dtype).contiguous()
        _, gh, gw, gb = _run(h_s, w_s, b_s, tuple(teacher), index, ctx.spec, grad_values, needs)
        return gh, gw, gb, None, None, *([None] * len(teacher))


def _check_shapes(student_hidden: Tensor, student: LMHead, teacher_hidden: Tensor, teacher: LMHead):
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise DataError(
            f"student hidden {tuple(student_hidden.shape)} and teacher hidden "
            f"{tuple(teacher_hidden.shape)} must share their leading (token) dimensions"
        )
    for name, h, head in (
        ("student", student_hidden, student),
        ("teacher", teacher_hidden, teacher),
    ):
        if head.weight.dim() != 2 or head.weight.shape[1] != h.shape[-1]:
            raise DataError(
                f"{name} head weight {tuple(head.weight.shape)} must be [V, H] with H = "
                f"{h.shape[-1]} (the hidden size)"
            )
        if head.bias is not None and head.bias.shape != head.weight.shape[:1]:
            raise DataError(f"{name} head bias {tuple(head.bias.shape)} must be [V]")
    if student.weight.shape[0] != teacher.weight.shape[0]:
        raise DataError(
            f"student vocab {student.weight.shape[0]} != teacher vocab {teacher.weight.shape[0]}; "
            "the chunked loss needs a shared vocabulary (use the alignment layer otherwise)"
        )


def chunked_divergence(
    student_hidden: Tensor,
    student_head: LMHead,
    teacher_hidden: Tensor,
    teacher_head: LMHead,
    divergence: str = "generalized_jsd",
    coef: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    block_size: int | None = None,
) -> Tensor:
    """Divergence ``name`` between the heads' next-token distributions, a block of tokens at a time.

    Args:
        student_hidden: ``[..., H_s]`` hidden states (``[N, H_s]`` or ``[B, T, H_s]``).
        student_head: the student's ``LMHead`` (weight ``[V, H_s]``).
        teacher_hidden: ``[..., H_t]`` with the same leading dims; never receives a gradient.
        teacher_head: the teacher's ``LMHead`` (weight ``[V, H_t]``, same ``V``).
        divergence: a name in ``kernels.DIVERGENCES`` (``generalized_jsd``, ``forward_kl``, ...).
        coef: ``beta`` for ``generalized_jsd`` (0 = forward KL, 1 = reverse KL), ``alpha`` for skew.
        temperature: divides both models' logits (after scale and softcap).
        mask: ``[...]`` (the leading dims) bool/0-1; only counted positions are projected.
        reduction: ``mean`` (over counted positions, 0 when none), ``sum``, or ``none`` (``[...]``,
            zero where masked).
        block_size: tokens per block; default ``2**24 // V`` clamped to [16, 1024].

    Returns:
        A float32 scalar (``mean``/``sum``) or ``[...]`` values (``none``); float64 if given.
        Same values and gradients as ``divergences.divergence`` on the full logits.
    """
    kernel = get_kernel(divergence, coef)
    check_reduction(reduction)
    check_temperature(temperature)
    _check_shapes(student_hidden, student_head, teacher_hidden, teacher_head)
    dtype = compute_dtype_of(student_hidden, student_head)
    h_t = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1]).to(dtype)
    w_t = teacher_head.weight.detach().to(dtype)
    b_t = None if teacher_head.bias is None else teacher_head.bias.detach().to(dtype)
    target = DenseTarget(teacher_head.logit_scale, teacher_head.softcap)
    return chunked_loss(
        student_hidden, student_head, target, (h_t, w_t, b_t), kernel, coef, temperature, mask,
        reduction, block_size,
    )  # fmt: skip


def compute_dtype_of(student_hidden: Tensor, student_head: LMHead) -> torch.dtype:
    """float64 when the student's hidden states or head weight are float64, else float32."""
    wide = torch.float64 in (student_hidden.dtype, student_head.weight.dtype)
    return torch.float64 if wide else torch.float32


def chunked_loss(
    student_hidden: Tensor,
    student_head: LMHead,
    target: BlockTarget,
    teacher: tuple,
    kernel: DivergenceKernel,
    coef: float,
    temperature: float,
    mask: Tensor | None,
    reduction: str,
    block_size: int | None,
) -> Tensor:
    """The block loop shared by every chunked loss (``chunked_divergence``, ``chunked_topk``):
    ``student_hidden`` ``[..., H_s]`` through ``student_head`` a block of counted rows at a time,
    against ``target``'s teacher tensors ``teacher`` (per-row ones ``[M, ...]`` with ``M`` the
    flattened leading dims, already in the compute dtype and detached). Arguments checked by the
    caller; returns what ``chunked_divergence`` documents."""
    lead = student_hidden.shape[:-1]
    bool_mask = as_bool_mask(mask, lead)
    vocab = student_head.weight.shape[0]
    dtype = compute_dtype_of(student_hidden, student_head)
    h_s = student_hidden.reshape(-1, student_hidden.shape[-1])
    index = None  # project only the counted rows
    if bool_mask is not None and not bool(bool_mask.all()):
        index = bool_mask.reshape(-1).nonzero().squeeze(1)
    count = h_s.shape[0] if index is None else index.shape[0]
    if block_size is None:
        block_size = max(16, min(1024, TARGET_BLOCK_ELEMENTS // vocab))
    spec = _Spec(
        kernel, coef, 1.0 / temperature, student_head.logit_scale, student_head.softcap,
        block_size, target,
    )  # fmt: skip
    student = (
        h_s.to(dtype), student_head.weight.to(dtype),
        None if student_head.bias is None else student_head.bias.to(dtype),
    )  # fmt: skip
    if reduction == "none":
        values = _ChunkedPerToken.apply(*student, index, spec, *teacher)
        if index is None:
            return values.reshape(lead)
        return values.new_zeros(bool_mask.numel()).index_copy(0, index, values).reshape(lead)
    scale = 1.0 / max(count, 1) if reduction == "mean" else 1.0  # mean over zero tokens is 0
    weight_N = torch.full((count,), scale, dtype=dtype, device=h_s.device)
    needs_grad = torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in student)
    if not needs_grad:
        values, *_ = _run(*student, teacher, index, spec, None, (False, False, False))
        return (weight_N * values).sum()
    total, _values = _ChunkedSum.apply(*student, index, weight_N, spec, *teacher)
    return total

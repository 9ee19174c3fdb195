"""Universal Logit Distillation (ULD): the L1 distance between sorted probability vectors.

For two non-negative vectors ``p`` (length ``V_s``) and ``q`` (length ``V_t``), sort each in
descending order, zero-pad the shorter to ``n = max(V_s, V_t)`` and take

    ULD(p, q) = sum_i |p_(i) - q_(i)|.

This is ``n`` times the 1-D Wasserstein-1 distance between the empirical measures of the two padded
vectors' *values*: ``(1/n) sum_i delta_{p_i}`` and ``(1/n) sum_i delta_{q_i}`` (uniform weights).
In 1-D the optimal coupling of two uniform empirical measures with ``n`` atoms matches sorted to
sorted, so ``W1 = (1/n) sum_i |p_(i) - q_(i)|`` (POT: ``ot.wasserstein_1d(p, q)``). ULD ignores
which token carries which probability, so it compares distributions over different vocabularies.

Sorting is the main cost. On CPU, numpy's SIMD sort (x86-simd-sort) is much faster than
``torch.sort`` (measured in ``benchmarks/RESULTS-alignment.md``), so float32 CPU tensors are sorted
by numpy (the argsort the gradient needs is one
64-bit key sort of ``value bits << 32 | index``) and CUDA tensors by torch. The longer side's
smallest ``|V_s - V_t|`` values meet the zero padding: they add their sum whatever their order,
so where they are a large share of the row (``PARTIAL_TAIL``) the top ``min(V_s, V_t)`` are
selected first (``ndarray.partition``, linear) and only those sorted (a 152k-token teacher
against a 49k student sorts ~40% less). Rows are sorted a chunk at a time on
``torch.get_num_threads()`` threads (``alignment.cpu.run_chunks``: one pool, numpy sorts outside
the GIL). The loss has a custom backward that keeps one int8 sign per element instead of int64
sort indices. Ties: any order.
"""

from __future__ import annotations

import sys
from typing import Literal

import numpy as np
import torch

from alignment.cpu import buffer, run_chunks
from alignment.errors import AlignmentError

Reduction = Literal["mean", "sum", "none"]


PARTIAL_TAIL = 0.3  # partition before sorting when the zero-compared tail is >= this share of V
SCRATCH_MAX_BYTES = 1 << 26  # scratch buffers up to this size are kept between calls
SORT_CHUNK_ROWS = 8  # rows per chunk at least, when the rows are sorted on several threads


def argsort_rows(x_R_V: torch.Tensor) -> torch.Tensor:
    """int64 [R, V] indices that sort each row of ``x_R_V`` ascending (ties: any order).

    CPU: numpy's vectorized sort; other devices: ``torch.argsort``. ``x`` is not differentiated.
    """
    if x_R_V.device.type != "cpu":
        return torch.argsort(x_R_V.detach(), dim=-1)
    return torch.from_numpy(np.argsort(x_R_V.detach().contiguous().numpy(), axis=-1))


def sort_rows(x_R_V: torch.Tensor) -> torch.Tensor:
    """[R, V] each row of ``x_R_V`` sorted ascending (values only, no gradient)."""
    if x_R_V.device.type != "cpu":
        return torch.sort(x_R_V.detach(), dim=-1).values
    return torch.from_numpy(np.sort(x_R_V.detach().contiguous().numpy(), axis=-1))


def _sort_chunk_rows(R: int) -> int:
    """Rows per chunk: two chunks per torch thread (a slow thread holds up less), at least
    ``SORT_CHUNK_ROWS``."""
    return max(SORT_CHUNK_ROWS, -(-R // (2 * torch.get_num_threads())))


def _scratch(slot: str, shape: tuple[int, int], dtype) -> np.ndarray:
    """An uninitialized array that this thread reuses between calls (up to
    ``SCRATCH_MAX_BYTES``; ``alignment.cpu.buffer``)."""
    nbytes = shape[0] * shape[1] * np.dtype(dtype).itemsize
    raw = buffer("uld." + slot, (nbytes,), torch.uint8, "cpu", max_bytes=SCRATCH_MAX_BYTES)
    return raw.numpy().view(dtype).reshape(shape)


def _check_non_negative(bad_R, name: str) -> None:
    """Raise for the first row flagged (numpy or torch bool/int ``[R]``)."""
    bad = np.flatnonzero(np.asarray(bad_R))
    if bad.size:
        raise AlignmentError(
            f"ULD takes non-negative values (probabilities): row {bad[0]} of {name} has a "
            "negative value (or -0.0); clamp it at 0 (x.clamp(min=0) + 0.0)"
        )


def _top_ascending_f32(
    x_R_V: np.ndarray, m: int, need_index: bool, partial: bool | None = None, slot: str = "x"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each row's ``m`` largest values in ascending order, the sum of the other ``V - m``.

    Args:
        x_R_V: C-contiguous non-negative float32 rows, ``V < 2**32``; a negative value or
            ``-0.0`` raises ``AlignmentError``.
        m: how many of the largest values are needed in order (``1 <= m <= V``).
        need_index: also return the column of each of those values.
        partial: select the top ``m`` (``ndarray.partition``) before sorting them instead of
            sorting the whole row; default: when the tail is at least ``PARTIAL_TAIL`` of ``V``.
            Both give the same top values and indices; the tail sum may differ in rounding.
        slot: the scratch buffer the results live in (valid until the next call with it);
            names the input in errors.

    Returns:
        ``(tail_R, top_R_m, keys_R_m)``: float32 sum of the ``V - m`` smallest values, the top
        values ascending (possibly a strided view), and with ``need_index`` their sorted packed
        keys (``_columns`` turns them into the int64 columns, overwriting ``top``), else ``None``.

    With an index, one 64-bit key ``value bits << 32 | column`` is sorted: the bits of a
    non-negative float32 order like the float, so the key sorts by value (ties by column) and
    carries the column along; numpy's SIMD 64-bit sort beats its argsort.
    """
    R, V = x_R_V.shape
    cut = V - m
    if partial is None:
        partial = cut >= PARTIAL_TAIL * V
    arr = _scratch(slot, (R, V), np.uint64 if need_index else np.uint32)
    cols = np.arange(V, dtype=np.uint32) if need_index else None

    def work(rows: slice) -> None:
        block = arr[rows]
        if need_index:  # little-endian: word 0 is the low half (column), word 1 the value
            words = block.view(np.uint32).reshape(block.shape[0], V, 2)
            words[..., 1] = x_R_V[rows].view(np.uint32)
            words[..., 0] = cols
        else:  # the bits, sorted as integers: the same order for non-negative floats
            block[...] = x_R_V[rows].view(np.uint32)
        if partial and cut > 0:
            block.partition(cut, axis=-1)
            block[:, cut:].sort(axis=-1)
        else:
            block.sort(axis=-1)

    run_chunks(work, R, _sort_chunk_rows(R), "cpu")
    # a set sign bit (negative or -0.0) sorts last as an integer: one look per row finds it
    _check_non_negative(arr[:, -1] >> (63 if need_index else 31), slot)
    if not need_index:
        values = arr.view(np.float32)
        return values[:, :cut].sum(-1), values[:, cut:], None
    values = arr.view(np.uint32).reshape(R, V, 2)[..., 1].view(np.float32)  # the high words
    return values[:, :cut].sum(-1), values[:, cut:], arr[:, cut:]


def _columns(keys_R_m: np.ndarray) -> torch.Tensor:
    """int64 columns from sorted packed keys, in place: the keys' values are gone after this."""
    return torch.from_numpy(
        np.bitwise_and(keys_R_m, np.uint64(0xFFFFFFFF), out=keys_R_m).view(np.int64)
    )


def _signs_in_place(x_R_V: torch.Tensor, sorted_sign_R_m: torch.Tensor, idx_R_m: torch.Tensor):
    """int8 [R, V]: ``sorted_sign`` at columns ``idx``, ``sign(x)`` (vs the padding) elsewhere."""
    if idx_R_m.shape[-1] == x_R_V.shape[-1]:
        out = torch.empty(x_R_V.shape, dtype=torch.int8)
    else:
        out = (x_R_V > 0).to(torch.int8)
    return out.scatter_(-1, idx_R_m, sorted_sign_R_m)


def _sorted_l1_cpu_f32(
    p_R_Vp: torch.Tensor, q_R_Vq: torch.Tensor, grad_p: bool, grad_q: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``sorted_l1_rows`` for float32 CPU rows (numpy SIMD sort / partition, see there)."""
    m = min(p_R_Vp.shape[-1], q_R_Vq.shape[-1])
    p, q = p_R_Vp.detach().contiguous(), q_R_Vq.detach().contiguous()
    tail_p, top_p, keys_p = _top_ascending_f32(p.numpy(), m, grad_p, slot="p (student)")
    tail_q, top_q, keys_q = _top_ascending_f32(q.numpy(), m, grad_q, slot="q (teacher)")
    # in place, no fresh pages: the difference over q's top (its columns, if any, stay intact)
    diff = np.subtract(top_p, top_q, out=top_q)
    sign = np.sign(diff, out=_scratch("sign", diff.shape, np.int8), casting="unsafe")
    loss_R = torch.from_numpy(np.abs(diff, out=diff).sum(-1) + tail_p + tail_q)
    sign_d = torch.from_numpy(sign)
    sign_p = None if keys_p is None else _signs_in_place(p, sign_d, _columns(keys_p))
    sign_q = None if keys_q is None else _signs_in_place(q, sign_d.neg_(), _columns(keys_q))
    return loss_R, sign_p, sign_q


def _sorted_with_index(x_R_V: torch.Tensor, need_index: bool):
    """Ascending ``(values, argsort or None)`` of rows of non-negative values (any device)."""
    if not need_index:
        return sort_rows(x_R_V).to(x_R_V.device), None
    idx = argsort_rows(x_R_V).to(x_R_V.device)
    return x_R_V.gather(-1, idx), idx


def _fast_cpu(x_R_V: torch.Tensor) -> bool:
    """Whether the numpy packed-key path applies: float32 rows on CPU, column fits 32 bits."""
    return (
        x_R_V.device.type == "cpu"
        and x_R_V.dtype == torch.float32
        and x_R_V.shape[-1] < 2**32
        and sys.byteorder == "little"
    )


def sorted_l1_rows(
    p_R_Vp: torch.Tensor, q_R_Vq: torch.Tensor, grad_p: bool, grad_q: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Row-wise ULD with its subgradient signs, no autograd.

    Args:
        p_R_Vp, q_R_Vq: non-negative rows (same ``R``; vocabularies may differ); a negative
            value (on the float32 CPU path also ``-0.0``) raises ``AlignmentError``.
        grad_p, grad_q: whether to return the subgradient of each side.

    Returns:
        ``(uld_R, sign_p_R_Vp, sign_q_R_Vq)``: the loss per row, and int8 ``d uld / d p`` (resp.
        ``q``) in each row's original order: ``sign(p_(i) - q_(i))`` at the element of rank ``i``
        (``+1``/``0`` against the zero padding), or ``None`` when not asked for.

    Works on ascending sorts: the descending, zero-padded pairing of ULD pairs the top
    ``m = min(Vp, Vq)`` of each side (the ends of the ascending arrays) and compares the rest of
    the longer side with zeros. That tail only adds its mass (and sign ``+1``/``0``), so on CPU
    it is not sorted: each row's top ``m`` is selected first (``ndarray.partition``) where the
    tail is a large share of the row (``PARTIAL_TAIL``), then sorted.
    """
    if _fast_cpu(p_R_Vp) and _fast_cpu(q_R_Vq):
        return _sorted_l1_cpu_f32(p_R_Vp, q_R_Vq, grad_p, grad_q)
    Vp, Vq = p_R_Vp.shape[-1], q_R_Vq.shape[-1]
    m = min(Vp, Vq)
    ps, idx_p = _sorted_with_index(p_R_Vp, grad_p)
    qs, idx_q = _sorted_with_index(q_R_Vq, grad_q)
    _check_non_negative((ps[:, 0] < 0).cpu(), "p (student)")
    _check_non_negative((qs[:, 0] < 0).cpu(), "q (teacher)")
    diff = ps[:, Vp - m :] - qs[:, Vq - m :]
    # the zero padding: the longer side's smallest values are compared with zeros
    loss_R = diff.abs().sum(-1) + ps[:, : Vp - m].sum(-1) + qs[:, : Vq - m].sum(-1)
    sign_d = diff.sign().to(torch.int8)
    sign_p = sign_q = None
    if idx_p is not None:
        sorted_sign = torch.cat([ps[:, : Vp - m].sign().to(torch.int8), sign_d], dim=-1)
        sign_p = torch.empty_like(sorted_sign).scatter_(-1, idx_p, sorted_sign)
    if idx_q is not None:
        sorted_sign = torch.cat([qs[:, : Vq - m].sign().to(torch.int8), sign_d.neg_()], dim=-1)
        sign_q = torch.empty_like(sorted_sign).scatter_(-1, idx_q, sorted_sign)
    return loss_R, sign_p, sign_q


def topk_l1_rows(
    p_R_Vp: torch.Tensor, q_R_Vq: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-``k`` ULD (``uld_loss_topk``) with the int8 subgradient for ``p``, no autograd.

    Returns ``(loss_R, sign_p_R_Vp)``: ``sign(p_(i) - q_(i))`` on ``p``'s top ``K`` elements,
    ``sign(tail_p - tail_q)`` on every other element of ``p`` (each one adds to ``tail_p``).
    """
    K = min(k, max(p_R_Vp.shape[-1], q_R_Vq.shape[-1]))
    kp = min(K, p_R_Vp.shape[-1])
    head_p, idx_p = p_R_Vp.topk(kp, dim=-1)
    head_q = _padded_topk(q_R_Vq, K)
    tail_p = p_R_Vp.sum(-1) - head_p.sum(-1)
    tail_q = q_R_Vq.sum(-1) - head_q.sum(-1)
    diff = torch.nn.functional.pad(head_p, (0, K - kp)) - head_q
    loss_R = diff.abs().sum(-1) + (tail_p - tail_q).abs()
    tail_sign = (tail_p - tail_q).sign().to(torch.int8)
    sign_p = tail_sign.unsqueeze(-1).expand(p_R_Vp.shape).clone()
    sign_p.scatter_(-1, idx_p, diff[:, :kp].sign().to(torch.int8))
    return loss_R, sign_p


class _SortedL1(torch.autograd.Function):
    """Per-row ULD ``[R]`` with a backward that keeps only int8 signs."""

    @staticmethod
    def forward(ctx, p_R_Vp: torch.Tensor, q_R_Vq: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        need_p, need_q = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss_R, sign_p, sign_q = sorted_l1_rows(p_R_Vp, q_R_Vq, need_p, need_q)
        ctx.save_for_backward(sign_p, sign_q)
        ctx.dtypes = (p_R_Vp.dtype, q_R_Vq.dtype)
        return loss_R

    @staticmethod
    def backward(ctx, grad_R: torch.Tensor):  # type: ignore[override]
        sign_p, sign_q = ctx.saved_tensors
        gp = gq = None
        if sign_p is not None:
            gp = sign_p.to(ctx.dtypes[0]) * grad_R.unsqueeze(-1).to(ctx.dtypes[0])
        if sign_q is not None:
            gq = sign_q.to(ctx.dtypes[1]) * grad_R.unsqueeze(-1).to(ctx.dtypes[1])
        return gp, gq


def reduce_rows(
    loss_N: torch.Tensor, mask_N: torch.Tensor | None, reduction: Reduction
) -> torch.Tensor:
    """Apply a mask and a reduction to a per-row loss ``[...]``.

    ``mean`` divides the sum over counted rows by their number (0 when no row counts, no NaN);
    ``sum`` sums counted rows; ``none`` returns the loss with uncounted rows set to 0.
    """
    if mask_N is not None:
        if mask_N.shape != loss_N.shape:
            raise AlignmentError(
                f"mask shape {tuple(mask_N.shape)} != loss shape {tuple(loss_N.shape)}; "
                "pass one bool per row (all dims but the last)"
            )
        loss_N = torch.where(mask_N, loss_N, torch.zeros((), dtype=loss_N.dtype))
        count = mask_N.sum()
    else:
        count = torch.tensor(loss_N.numel())
    if reduction == "none":
        return loss_N
    if reduction == "sum":
        return loss_N.sum()
    if reduction == "mean":
        # global normalization: sum over counted rows / number of counted rows
        return loss_N.sum() / count.clamp(min=1).to(loss_N.dtype)
    raise AlignmentError(f"reduction={reduction!r} is not one of 'mean', 'sum', 'none'")


def _check_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape[:-1] != teacher.shape[:-1]:
        raise AlignmentError(
            f"student probs {tuple(student.shape)} and teacher probs {tuple(teacher.shape)} differ "
            "before the last (vocabulary) dim; align them to the same rows first"
        )
    if student.shape[-1] == 0 or teacher.shape[-1] == 0:
        raise AlignmentError("ULD needs a non-empty vocabulary dim on both sides")


def uld_loss(
    student_probs: torch.Tensor,
    teacher_probs: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """ULD between probability vectors over the last dim (vocabularies may differ in size).

    Args:
        student_probs: [..., V_s] non-negative (normalized or not).
        teacher_probs: [..., V_t] non-negative; same leading dims.
        mask: optional bool [...]; False rows do not count.
        reduction: ``mean`` over counted rows (0 if none), ``sum``, or ``none`` (per row, [...]).

    Returns:
        ``sum_i |sort_desc(p)_i - sort_desc(q)_i|`` per row with the shorter side zero-padded to
        ``n = max(V_s, V_t)``; equal to ``n * ot.wasserstein_1d(p_padded, q_padded)``.
        Computed in float32 at least; differentiable in both inputs (subgradient ``0`` at ties).
    """
    _check_pair(student_probs, teacher_probs)
    lead = student_probs.shape[:-1]
    dtype = torch.promote_types(student_probs.dtype, torch.float32)
    p = student_probs.to(dtype).reshape(-1, student_probs.shape[-1])
    q = teacher_probs.to(dtype).reshape(-1, teacher_probs.shape[-1])
    loss = _SortedL1.apply(p, q).reshape(lead)
    return reduce_rows(loss, mask, reduction)


def uld_loss_topk(
    student_probs: torch.Tensor,
    teacher_probs: torch.Tensor,
    k: int,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """ULD on the top ``k`` values of each side, the rest summarized by its total mass.

    With ``K = min(k, max(V_s, V_t))``, each side's top ``min(K, V)`` values (``torch.topk``) are
    zero-padded to ``K``; ``tail = row sum - head sum``. The loss is

        sum_{i<K} |p_(i) - q_(i)| + |tail_p - tail_q|.

    Bound (not exact): the true ULD adds ``sum_{i>=K} |p_(i) - q_(i)|`` instead of the last term,
    which lies in ``[|tail_p - tail_q|, tail_p + tail_q]``, so this is a lower bound of ULD that
    is off by at most ``2 * min(tail_p, tail_q)``. Exact when ``k >= max(V_s, V_t)`` (empty tails).
    Memory: ``O(rows * k)`` saved for backward instead of ``O(rows * V)``.

    Shapes, mask and reduction as in ``uld_loss``.
    """
    _check_pair(student_probs, teacher_probs)
    if k < 1:
        raise AlignmentError(f"k={k} must be >= 1 (the number of top values compared exactly)")
    dtype = torch.promote_types(student_probs.dtype, torch.float32)
    p, q = student_probs.to(dtype), teacher_probs.to(dtype)
    K = min(k, max(p.shape[-1], q.shape[-1]))
    head_p = _padded_topk(p, K)
    head_q = _padded_topk(q, K)
    tail_p = p.sum(-1) - head_p.sum(-1)
    tail_q = q.sum(-1) - head_q.sum(-1)
    loss = (head_p - head_q).abs().sum(-1) + (tail_p - tail_q).abs()
    return reduce_rows(loss, mask, reduction)


def _padded_topk(x: torch.Tensor, K: int) -> torch.Tensor:
    """[..., K] the top ``min(K, V)`` values of ``x`` (descending), zero-padded to ``K``."""
    head = x.topk(min(K, x.shape[-1]), dim=-1).values
    if head.shape[-1] < K:
        head = torch.nn.functional.pad(head, (0, K - head.shape[-1]))
    return head

"""Span alignment: the finest common segmentation of two tokenizations of the same bytes.

Two tokenizations ``a`` and ``b`` of one byte string each cut it at their token ends. A span ends at
every byte position where **both** cut, so span ``k`` covers the same bytes on both sides and holds
one or more consecutive tokens of each. Computed without a loop per token:

    common_ends = sorted(ends_a ∩ ends_b)            # both tokenizations have a boundary there
    span(token) = searchsorted(common_ends, end)      # first common end at or after the token's end

Zero-width tokens (``end == start``: special tokens, padding) belong to no span (``-1``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from alignment.errors import AlignmentError
from alignment.types import SpanAlignment


def _as_offsets(offsets: Any, name: str) -> np.ndarray:
    arr = np.asarray(offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise AlignmentError(f"{name} must have shape [T, 2] (start, end); got {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _text_tokens(off_T2: np.ndarray, name: str) -> tuple[np.ndarray, int, int]:
    """Indices of the non-zero-width tokens, checked to tile [lo, hi) contiguously."""
    width = off_T2[:, 1] - off_T2[:, 0]
    if (width < 0).any():
        i = int(np.flatnonzero(width < 0)[0])
        raise AlignmentError(f"{name}[{i}] = {off_T2[i].tolist()} has end < start")
    idx = np.flatnonzero(width > 0)
    if idx.size == 0:
        return idx, 0, 0
    starts, ends = off_T2[idx, 0], off_T2[idx, 1]
    gaps = np.flatnonzero(starts[1:] != ends[:-1])
    if gaps.size:
        j = idx[gaps[0] + 1]
        raise AlignmentError(
            f"{name} do not tile the bytes: token {j} starts at {off_T2[j, 0]} but the previous "
            f"token ends at {ends[gaps[0]]}; pass offsets from byte_offsets/token_offsets"
        )
    return idx, int(starts[0]), int(ends[-1])


def align_spans(a_offsets: Any, b_offsets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Span index per token for two tokenizations of the same bytes.

    Args:
        a_offsets: int [Ta, 2] ``(start, end)`` byte offsets of tokenization ``a`` (array/tensor).
        b_offsets: int [Tb, 2] the same for ``b``. The non-zero-width tokens of each side must tile
            one byte range ``[lo, hi)``, the same range on both sides.

    Returns:
        (a_span_Ta, b_span_Tb): int64 tensors; spans numbered ``0, 1, ...`` in byte order, span
        ``k`` covering the same bytes on both sides; ``-1`` for zero-width tokens.

    Raises:
        AlignmentError: offsets that do not tile a range, or the two sides cover different bytes.
    """
    a, b = _as_offsets(a_offsets, "a_offsets"), _as_offsets(b_offsets, "b_offsets")
    a_idx, a_lo, a_hi = _text_tokens(a, "a_offsets")
    b_idx, b_lo, b_hi = _text_tokens(b, "b_offsets")
    if (a_lo, a_hi) != (b_lo, b_hi):
        raise AlignmentError(
            f"the two tokenizations cover different bytes: a covers [{a_lo}, {a_hi}), b covers "
            f"[{b_lo}, {b_hi}); align offsets of the same text (same start position)"
        )
    return _spans(a, a_idx, b, b_idx)


def _spans(
    a: np.ndarray, a_idx: np.ndarray, b: np.ndarray, b_idx: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Span per token given the (checked) text-token indices of each side."""
    a_ends, b_ends = a[a_idx, 1], b[b_idx, 1]
    common = np.intersect1d(a_ends, b_ends, assume_unique=True)  # sorted
    a_span = np.full(len(a), -1, dtype=np.int64)
    b_span = np.full(len(b), -1, dtype=np.int64)
    a_span[a_idx] = np.searchsorted(common, a_ends)
    b_span[b_idx] = np.searchsorted(common, b_ends)
    return torch.from_numpy(a_span), torch.from_numpy(b_span)


def align_spans_batch(
    student_offsets_B_Ts2: torch.Tensor,
    teacher_offsets_B_Tt2: torch.Tensor,
    student_mask_B_Ts: torch.Tensor | None = None,
    teacher_mask_B_Tt: torch.Tensor | None = None,
) -> SpanAlignment:
    """``align_spans`` for padded batches, all rows at once (no loop over rows).

    Args:
        student_offsets_B_Ts2: int [B, Ts, 2] byte offsets per row (padding: any zero-width pair).
        teacher_offsets_B_Tt2: int [B, Tt, 2] the same for the teacher.
        student_mask_B_Ts: optional bool [B, Ts]; False marks padding (treated as zero-width).
        teacher_mask_B_Tt: optional bool [B, Tt] likewise.

    Returns:
        ``SpanAlignment`` with span indices restarting at 0 on every row, ``-1`` on zero-width and
        padded tokens, and the number of spans per row.

    Rows are laid end to end on one byte axis (row ``b`` shifted by ``b * (max_end + 1)``, so no
    boundary is shared across rows), aligned once, and renumbered per row.
    """
    s = _masked(student_offsets_B_Ts2, student_mask_B_Ts, "student")
    t = _masked(teacher_offsets_B_Tt2, teacher_mask_B_Tt, "teacher")
    if s.shape[0] != t.shape[0]:
        raise AlignmentError(f"batch sizes differ: student {s.shape[0]} rows, teacher {t.shape[0]}")
    B = s.shape[0]
    s_rows = [_text_tokens(s[r], f"student_offsets[{r}]")[1:] for r in range(B)]
    t_rows = [_text_tokens(t[r], f"teacher_offsets[{r}]")[1:] for r in range(B)]
    for r, (sr, tr) in enumerate(zip(s_rows, t_rows, strict=True)):
        if sr != tr:
            raise AlignmentError(
                f"row {r}: student covers bytes [{sr[0]}, {sr[1]}), teacher [{tr[0]}, {tr[1]}); "
                "both sides of a row must cover the same bytes"
            )
    stride = int(max(s.max(initial=0), t.max(initial=0))) + 1
    shift_B = (np.arange(B, dtype=np.int64) * stride)[:, None, None]
    s_flat, t_flat = (s + shift_B).reshape(-1, 2), (t + shift_B).reshape(-1, 2)
    s_idx = np.flatnonzero(s_flat[:, 1] > s_flat[:, 0])
    t_idx = np.flatnonzero(t_flat[:, 1] > t_flat[:, 0])
    s_span, t_span = _spans(s_flat, s_idx, t_flat, t_idx)
    s_span, t_span = s_span.view(B, -1), t_span.view(B, -1)  # (B, Ts), (B, Tt)
    # spans are numbered globally in row order: subtract each row's first global span index,
    # i.e. one more than the last span index of any earlier row (0 for the first row)
    last_B = torch.maximum(_row_max(s_span), _row_max(t_span))  # -1 for a row without text
    first_B = torch.zeros_like(last_B)
    first_B[1:] = torch.cummax(last_B, 0).values[:-1] + 1
    s_span = torch.where(s_span >= 0, s_span - first_B[:, None], -1)
    t_span = torch.where(t_span >= 0, t_span - first_B[:, None], -1)
    num_spans_B = torch.where(last_B >= 0, last_B + 1 - first_B, 0)
    return SpanAlignment(s_span, t_span, num_spans_B)


def _row_max(span_B_T: torch.Tensor) -> torch.Tensor:
    if span_B_T.shape[1] == 0:
        return torch.full((span_B_T.shape[0],), -1, dtype=torch.long)
    return span_B_T.max(1).values


def _masked(offsets: torch.Tensor, mask: torch.Tensor | None, name: str) -> np.ndarray:
    arr = np.asarray(offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets)
    arr = arr.astype(np.int64)  # a copy: padding is rewritten below
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise AlignmentError(f"{name} offsets must have shape [B, T, 2]; got {arr.shape}")
    if mask is not None:
        keep = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
        if keep.shape != arr.shape[:2]:
            raise AlignmentError(f"{name} mask shape {keep.shape} != offsets {arr.shape[:2]}")
        arr[~keep] = arr[~keep][:, :1]  # zero-width at its own start
    return arr

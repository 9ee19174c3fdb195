"""One autograd function for the byte-mass kernels (private): a function of a few rows of a large
logits matrix, a chunk of rows at a time, forward and backward on ``alignment.cpu``'s one pool.

``row_chunks(logits_N_V, job)`` returns ``out`` with ``out[job.places[i]] = job.fn(z_i, i)[0]``
for every chunk ``i``, where ``z_i = logits_N_V[job.rows[i]]`` (the chunk's gathered rows). In
forward the chunks run on ``alignment.cpu.run_chunks`` without autograd; only the logits are saved.
In backward each chunk is recomputed from its gathered rows (the activation checkpointing of the
form this replaces: no [rows x V] intermediate is kept between forward and backward), its
vector-Jacobian product taken in the thread that owns the chunk, and added into the gradient rows.

Why one function and not ``torch.utils.checkpoint`` per chunk: a checkpointed chunk's ops, and the
backward of its graph, run on torch's OpenMP team one small op at a time, and at torch's default
thread count its workers spin between ops (the CPU time that costs against one thread:
``benchmarks/RESULTS-threads.md``). Here every chunk, forward and backward, runs in one thread
with torch's team off, and the chunks are fixed by the rows (not by the thread count): values
and gradients are bit-identical at any thread count (``tests/alignment/test_byte_mass_threads.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.autograd.function import once_differentiable

from alignment.cpu import run_chunks

Place = torch.Tensor | slice


@dataclass(frozen=True)
class RowJob:
    """What ``row_chunks`` computes.

    Attributes:
        rows: per chunk, the logits rows it reads ([r_i] long).
        places: per chunk, where its output rows go in ``out`` (index tensor or slice).
        fn: ``fn(z_i, i) -> (value_i, *extras_i)``; ``z_i`` [r_i, V] the gathered rows in the
            logits' dtype; ``value_i`` is differentiable in ``z_i``; the extras (no gradient) are
            written to ``extras[k][places[i]]`` in forward only.
        out: the preallocated output (its first dimension indexed by ``places``).
        extras: preallocated outputs without gradient, filled in forward.
    """

    rows: Sequence[torch.Tensor]
    places: Sequence[Place]
    fn: Callable[..., tuple[torch.Tensor, ...]]
    out: torch.Tensor
    extras: tuple[torch.Tensor, ...] = field(default=())


def _put(dst: torch.Tensor, place: Place, src: torch.Tensor) -> None:
    if isinstance(place, slice):
        dst[place] = src
    else:
        dst.index_copy_(0, place, src.to(dst.dtype))


def _take(src: torch.Tensor, place: Place) -> torch.Tensor:
    return src[place] if isinstance(place, slice) else src.index_select(0, place)


def _disjoint(rows: Sequence[torch.Tensor]) -> bool:
    """No logits row is read by two chunks (their gradients can be written concurrently)."""
    if len(rows) < 2:
        return True
    flat = torch.cat(list(rows))
    return int(torch.unique(flat).numel()) == int(flat.numel())


class _RowChunks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_N_V: torch.Tensor, job: RowJob):  # type: ignore[override]
        def one(chunks: slice) -> None:
            for i in range(chunks.start, chunks.stop):
                value, *extras = job.fn(logits_N_V.index_select(0, job.rows[i]), i)
                _put(job.out, job.places[i], value)
                for dst, src in zip(job.extras, extras, strict=True):
                    _put(dst, job.places[i], src)

        run_chunks(one, len(job.rows), 1, logits_N_V.device)
        ctx.save_for_backward(logits_N_V)
        ctx.job = job
        ctx.mark_non_differentiable(*job.extras)
        return (job.out, *job.extras)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, *_):  # type: ignore[override]
        (logits,) = ctx.saved_tensors
        job: RowJob = ctx.job
        grad = torch.zeros_like(logits)

        def one(chunks: slice) -> None:  # adds into the gradient rows of its chunks only
            for i in range(chunks.start, chunks.stop):
                z = logits.index_select(0, job.rows[i]).requires_grad_(True)
                with torch.enable_grad():
                    value = job.fn(z, i)[0]
                g_out = _take(grad_out, job.places[i]).to(value.dtype)
                (g,) = torch.autograd.grad(value, z, g_out, allow_unused=True)
                if g is not None:
                    grad.index_add_(0, job.rows[i], g.to(grad.dtype))

        if _disjoint(job.rows):
            run_chunks(one, len(job.rows), 1, logits.device)
        else:  # two chunks share a row: add their gradients one after the other
            one(slice(0, len(job.rows)))
        return grad, None


def row_chunks(logits_N_V: torch.Tensor, job: RowJob) -> tuple[torch.Tensor, ...]:
    """``(out, *extras)`` of ``job`` (module docstring); differentiable in ``logits_N_V`` when it
    requires grad (no double backward)."""
    if not logits_N_V.requires_grad:
        with torch.no_grad():
            return _RowChunks.forward(_NoCtx(), logits_N_V, job)
    return _RowChunks.apply(logits_N_V, job)


class _NoCtx:
    """Stand-in for autograd's context when no gradient is needed (nothing is saved)."""

    def save_for_backward(self, *_: torch.Tensor) -> None:
        pass

    def mark_non_differentiable(self, *_: torch.Tensor) -> None:
        pass


__all__ = ["RowJob", "row_chunks"]

"""Chunked divergence against a top-k teacher: the student's logits from its hidden states and LM
head a block of positions at a time (``onpolicy.losses.chunked``'s block loop), the teacher's
top-k ids + log-probs + tail mass as given (a vLLM teacher, ``onpolicy score``'s cache,
``LocalTeacher(top_k=K)``). Same values as ``sparse.sparse_divergence`` on the full student logits,
without ever holding the student's ``[N, V]`` logits, log-probs or gradient at once.

Per block of ``n`` rows (``K`` support ids per row, the rest of the vocabulary one tail bucket):

- student: ``log q_k = log p_s(v_k)`` and ``log q_tail = logsumexp_{v off support} log p_s(v)``
  (from a scratch ``[n, V]`` buffer holding ``exp(log p_s(v) - max)`` off the support);
- teacher: its ``K`` log-probs and its tail ``log(1 - sum_k p_t(v_k))`` (or given);
- the kernel's value and closed-form gradient on the ``K + 1`` outcomes, ``g_c = dL/dz_c``
  (``log q = log_softmax(z_c)``), mapped to the vocabulary: with ``c(v)`` the bucket of ``v``,
  ``dL/dz_v = p_s(v) * g_c(v) / q_c(v)``, i.e. ``g_k`` at the support ids and
  ``p_s(v) * g_tail / q_tail`` off it (derivation: ``d log q_c / dz_v = [v in c] p_v / q_c - p_v``
  and ``g_c = a_c - q_c sum(a)`` for ``a = dL/d log q``).

The closed-form gradients take the teacher's ``K + 1`` buckets as a distribution (summing to 1, as
the default tail ``1 - sum_k p_t(v_k)`` does up to its ``min_tail_mass`` floor; a given tail should
too); ``sparse_divergence``, through autograd, differs from them only when they do not.

When ``K == V`` there is no tail bucket: the ids permute the vocabulary and the result equals the
dense divergence against the teacher's full distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onpolicy.errors import DataError
from onpolicy.losses.chunked import LMHead, chunked_loss, compute_dtype_of, select_rows
from onpolicy.losses.kernels import DivergenceKernel, get_kernel
from onpolicy.losses.reduce import check_reduction, check_temperature
from onpolicy.losses.sparse import teacher_tail_logprob

Tensor = torch.Tensor


@dataclass(frozen=True)
class TopKTarget:
    """A top-k teacher: ``teacher = (ids [M, K] int64, logprobs [M, K], tail [M])``;
    ``full_support``: ``K == V`` (no tail bucket)."""

    full_support: bool

    def rows(self, teacher: tuple, sl: slice, rows: Tensor | None) -> tuple:
        return select_rows(teacher, sl, rows)

    def prepare(self, block: tuple, inv_t: float, buf_z: Tensor, buf_t: Tensor) -> tuple:
        return block  # nothing to project: the teacher's numbers are given

    def divergence(
        self, log_ps: Tensor, prepared: tuple, kernel: DivergenceKernel, coef: float,
        with_grad: bool, buf_t: Tensor,
    ) -> tuple[Tensor, Tensor | None]:  # fmt: skip
        ids, lp_t, tail_t = prepared
        log_q = log_ps.gather(-1, ids)  # [n, K]
        if self.full_support:  # the kernel may overwrite its inputs: the teacher's are copied
            log_pt = lp_t.clone()
        else:
            off = buf_t.copy_(log_ps).scatter_(-1, ids, -torch.inf)  # [n, V] off the support
            top = off.amax(-1, keepdim=True)  # [n, 1], finite: some token is off the support
            mass = off.sub_(top).exp_().sum(-1, keepdim=True)  # q_tail / exp(top), >= 1
            log_q = torch.cat([log_q, top + mass.log()], dim=-1)  # [n, K + 1]
            log_pt = torch.cat([lp_t, tail_t.unsqueeze(-1)], dim=-1)
        if not with_grad:
            return kernel.value(log_q, log_pt, coef), None
        value, g = kernel.value_and_grad(log_q, log_pt, coef)  # g: dL/dz_c [n, K (+ 1)]
        k = ids.shape[-1]
        if self.full_support:
            return value, buf_t.scatter_(-1, ids, g)  # ids cover every column once
        # off the support p_s(v) / q_tail = off_v / mass; at the support ids g_k itself
        grad = off.mul_(g[:, k:] / mass).scatter_(-1, ids, g[:, :k])
        return value, grad


def _check(student_hidden: Tensor, head: LMHead, ids: Tensor, logprobs: Tensor, tail) -> None:
    lead = tuple(student_hidden.shape[:-1])
    if ids.shape != logprobs.shape or tuple(ids.shape[:-1]) != lead:
        raise DataError(
            f"teacher top-k ids {tuple(ids.shape)} and logprobs {tuple(logprobs.shape)} must "
            f"both be [..., K] with [...] = {lead} (the student hidden states' leading dims)"
        )
    if ids.dtype not in (torch.int64, torch.int32):
        raise DataError(f"teacher top-k ids must be integer token ids; got {ids.dtype}")
    if head.weight.dim() != 2 or head.weight.shape[1] != student_hidden.shape[-1]:
        raise DataError(
            f"student head weight {tuple(head.weight.shape)} must be [V, H] with H = "
            f"{student_hidden.shape[-1]} (the hidden size)"
        )
    if ids.shape[-1] > head.weight.shape[0]:
        raise DataError(f"top-k of {ids.shape[-1]} exceeds the vocabulary {head.weight.shape[0]}")
    if tail is not None and tuple(tail.shape) != lead:
        raise DataError(f"teacher tail {tuple(tail.shape)} must be [...] = {lead}")


def chunked_topk_divergence(
    student_hidden: Tensor,
    student_head: LMHead,
    teacher_topk_ids: Tensor,
    teacher_topk_logprobs: Tensor,
    divergence: str = "generalized_jsd",
    coef: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: str = "mean",
    teacher_tail: Tensor | None = None,
    min_tail_mass: float = 1e-8,
    block_size: int | None = None,
) -> Tensor:
    """``sparse_divergence`` of the student's head logits against a top-k teacher, a block of
    positions at a time (module docstring).

    Args:
        student_hidden: ``[..., H]`` final hidden states (``[N, H]`` or ``[B, T, H]``).
        student_head: the student's ``LMHead`` (weight ``[V, H]``); its logits are divided by
            ``temperature`` (the teacher's log-probs are used as given).
        teacher_topk_ids: ``[..., K]`` token ids, distinct within a position.
        teacher_topk_logprobs: ``[..., K]`` the teacher's log-probabilities of those ids.
        divergence, coef: a ``kernels.DIVERGENCES`` name and its beta/alpha.
        mask: ``[...]`` bool/0-1 positions that count (only those are projected).
        reduction: ``mean`` | ``sum`` | ``none``.
        teacher_tail: optional ``[...]`` log tail mass; default ``teacher_tail_logprob``
            (floored at ``min_tail_mass``); unused when ``K == V``.
        block_size: positions per block; default as ``chunked_divergence``.

    Returns:
        A scalar (``mean``/``sum``) or ``[...]`` (``none``), float32 (float64 if the student's
        hidden states or head are float64); gradients for the hidden states and the head.
    """
    kernel = get_kernel(divergence, coef)
    check_reduction(reduction)
    check_temperature(temperature)
    _check(student_hidden, student_head, teacher_topk_ids, teacher_topk_logprobs, teacher_tail)
    dtype = compute_dtype_of(student_hidden, student_head)
    k = teacher_topk_ids.shape[-1]
    ids = teacher_topk_ids.detach().reshape(-1, k).long()
    lp = teacher_topk_logprobs.detach().reshape(-1, k)
    if teacher_tail is None:
        teacher_tail = teacher_tail_logprob(lp, min_tail_mass)
    tail = teacher_tail.detach().reshape(-1)
    teacher = (ids, lp.to(dtype), tail.to(dtype))
    target = TopKTarget(full_support=k == student_head.weight.shape[0])
    return chunked_loss(
        student_hidden, student_head, target, teacher, kernel, coef, temperature, mask,
        reduction, block_size,
    )  # fmt: skip

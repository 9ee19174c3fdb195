"""Loss normalization by the *global* count of counted tokens (accumulation + data parallel).

A step's loss is ``sum over every counted token of the step (all micro-batches, all processes) of
L_token / N_global``. Each micro-batch contributes ``loss_sum / N_global`` (its own SUM, divided by
the global count), so the step's gradient does not depend on how the tokens are split into
micro-batches or processes. Usage::

    n = global_token_count(count_tokens(mb.mask for mb in micro_batches))   # once per step
    for mb in micro_batches:
        token_normalized(loss_fn(mb, reduction="sum"), n, world_size).backward()
    optimizer.step()

``world_size``: pass the number of processes when the data-parallel wrapper AVERAGES gradients
across processes (DDP, accelerate, FSDP do), so the average of the per-process gradients is the
gradient of the global mean; leave 1 when gradients are summed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

Tensor = torch.Tensor


def count_tokens(masks: Tensor | Iterable[Tensor]) -> int:
    """Number of counted positions (non-zero entries) in one mask or an iterable of masks."""
    if isinstance(masks, Tensor):
        return int((masks != 0).sum())
    return sum(int((m != 0).sum()) for m in masks)


def global_token_count(local_count: int | Tensor, group: dist.ProcessGroup | None = None) -> int:
    """``local_count`` summed over all processes of ``group`` (``torch.distributed`` all-reduce when
    it is initialized; the local count otherwise). Every process must call it (a collective)."""
    count = int(local_count)
    if not (dist.is_available() and dist.is_initialized()):
        return count
    backend = dist.get_backend(group)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    total = torch.tensor([count], dtype=torch.int64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return int(total.item())


def token_normalized(loss_sum: Tensor, global_count: int, world_size: int = 1) -> Tensor:
    """``loss_sum * world_size / global_count``: this micro-batch's share of the step's global mean.

    ``loss_sum``: a scalar SUM over this micro-batch's counted tokens. ``global_count``: from
    ``global_token_count``. With ``global_count == 0`` (no token counts anywhere) the result is
    ``loss_sum * 0``: value 0, zero gradients, never NaN.
    """
    if global_count < 0 or world_size < 1:
        raise ValueError(
            f"need global_count >= 0 and world_size >= 1; got {global_count}, {world_size}"
        )
    if global_count == 0:  # nothing counts anywhere this step: an explicit zero with zero grads
        return loss_sum * 0.0
    return loss_sum * (world_size / global_count)

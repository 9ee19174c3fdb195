"""Input checks and the reductions shared by every loss: masks and ``mean | sum | none``.

Conventions: ``per_token`` is ``[..., T]`` (one value per position), ``mask`` is ``[..., T]`` bool
or 0/1 (True/1 = the position counts). ``mean`` divides by the number of counted positions; a
``mean`` over zero counted positions is 0 (``sum / max(count, 1)``: 0, zero gradients, no NaN).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from onpolicy.errors import ConfigError, DataError

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction={reduction!r} is not one of {REDUCTIONS}")


def check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature={temperature} must be a finite number > 0")


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; every other floating dtype (bf16, fp16, fp32) computes in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def as_bool_mask(
    mask: torch.Tensor | None, shape: torch.Size, name: str = "mask"
) -> torch.Tensor | None:
    """``mask`` as a bool tensor of ``shape`` (``None`` stays ``None``); raises ``DataError`` when
    the shape differs or the values are not 0/1."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(shape):
        raise DataError(
            f"{name} has shape {tuple(mask.shape)} but the positions have shape {tuple(shape)}; "
            "pass one 0/1 entry per position"
        )
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise DataError(f"{name} must hold only 0/1 (or bool) values; got other values")
    return mask != 0


def reduce_per_token(
    per_token: torch.Tensor, mask: torch.Tensor | None, reduction: str
) -> torch.Tensor:
    """Reduce ``per_token`` [..., T] over counted positions.

    Returns a scalar for ``mean`` (sum over counted positions / their count, 0 when none count) and
    ``sum``; for ``none`` the ``[..., T]`` values with zeros where ``mask`` is False.
    """
    check_reduction(reduction)
    if mask is not None:
        per_token = torch.where(mask, per_token, per_token.new_zeros(()))
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    count = per_token.numel() if mask is None else int(mask.sum())
    # An empty selection divides 0 by 1: value 0 and zero gradients, on purpose (documented).
    return total / max(count, 1)

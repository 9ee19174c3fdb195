"""The trained map from the student's hidden width to the teacher's, one per layer pair.

A ``HiddenProjection`` holds ``L`` bias-free linear maps ``W_l: [Dt, Ds]`` (TinyBERT's ``W_h``,
DistillKit's ``distillation_projections``), or none when the widths are equal and no projection is
asked for (the states are then compared directly). It is a module of its own, not a part of the
student: the trainer optimizes it with the student, wraps it for DDP, saves it in every checkpoint
(accelerate's ``model_1.safetensors``) and restores it on resume; the exported student never holds
it.
"""

from __future__ import annotations

from typing import Literal

import torch

ProjectionInit = Literal["xavier", "identity"]


class HiddenProjection(torch.nn.Module):
    """``L`` linear maps ``[Ds] -> [Dt]`` (no bias); ``num_maps = 0``: the identity.

    Args:
        student_dim, teacher_dim: ``Ds`` and ``Dt``.
        num_maps: one per layer pair, or 0 (only when ``Ds == Dt``).
        init: ``xavier`` (uniform; DistillKit's default) or ``identity`` (``W[:k, :k] = I``,
            ``k = min(Ds, Dt)``, zeros elsewhere: the student's states as they are, truncated or
            zero-padded).
    """

    def __init__(
        self, student_dim: int, teacher_dim: int, num_maps: int, init: ProjectionInit = "xavier"
    ) -> None:
        super().__init__()
        if num_maps == 0 and student_dim != teacher_dim:
            raise ValueError(f"widths {student_dim} != {teacher_dim} need a projection")
        self.maps = torch.nn.ModuleList(
            torch.nn.Linear(student_dim, teacher_dim, bias=False) for _ in range(num_maps)
        )
        for linear in self.maps:
            _initialize(linear.weight, init)

    def forward(self, student_L_N_Ds: torch.Tensor) -> torch.Tensor:
        """``[L, N, Ds] -> [L, N, Dt]`` (layer ``l`` through map ``l``; identity without maps)."""
        if not len(self.maps):
            return student_L_N_Ds
        if student_L_N_Ds.shape[0] != len(self.maps):
            raise ValueError(f"{student_L_N_Ds.shape[0]} layers for {len(self.maps)} maps")
        # (L, N, Ds) x (L, Dt, Ds) -> (L, N, Dt), in the maps' dtype
        weights_L_Dt_Ds = torch.stack([m.weight for m in self.maps])
        x = student_L_N_Ds.to(weights_L_Dt_Ds.dtype)
        return torch.einsum("lnd,led->lne", x, weights_L_Dt_Ds)


def _initialize(weight: torch.Tensor, init: ProjectionInit) -> None:
    with torch.no_grad():
        if init == "xavier":
            torch.nn.init.xavier_uniform_(weight)
        elif init == "identity":
            weight.zero_()
            k = min(weight.shape)
            weight[:k, :k] = torch.eye(k, dtype=weight.dtype)
        else:
            raise ValueError(f"projection init {init!r} is unknown; use xavier or identity")

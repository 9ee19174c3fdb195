"""Hidden-state distillation distances (TinyBERT; DistillKit's ``hs_mse``, ``hs_cosine``).

For ``L`` layer pairs and ``N`` positions, with the student's hidden states already projected to
the teacher's width ``D``::

    mse:    d_n = (1 / L) sum_l (1 / D) ||s_ln - t_ln||^2
    cosine: d_n = (1 / L) sum_l (1 - <s_ln, t_ln> / max(||s_ln|| ||t_ln||, eps))

Per position, averaged over layers and (MSE) over the hidden width, so a weight means the same
for any depth map and any width: one micro-batch of DistillKit's loss is ``sum_n d_n / N``. The
caller sums ``d_n`` over counted positions and divides by the global count (``LossOutput``).
"""

from __future__ import annotations

from typing import Literal

import torch

HiddenLoss = Literal["mse", "cosine"]
HIDDEN_LOSSES: tuple[str, ...] = ("mse", "cosine")
COSINE_EPS = 1e-8


def hidden_distance(
    student_L_N_D: torch.Tensor, teacher_L_N_D: torch.Tensor, kind: HiddenLoss
) -> torch.Tensor:
    """Per-position distance ``d_n`` (see the module docstring): float32 ``[N]`` (float64 if the
    student is float64), averaged over the ``L`` layer pairs.

    Shapes: ``student_L_N_D`` (projected to the teacher's width, with gradients) and
    ``teacher_L_N_D`` (detached) are ``[L, N, D]`` with ``L >= 1``.
    """
    if student_L_N_D.shape != teacher_L_N_D.shape or student_L_N_D.dim() != 3:
        raise ValueError(
            f"hidden states must both be [L, N, D]; got {tuple(student_L_N_D.shape)} and "
            f"{tuple(teacher_L_N_D.shape)}"
        )
    dtype = torch.float64 if student_L_N_D.dtype == torch.float64 else torch.float32
    s, t = student_L_N_D.to(dtype), teacher_L_N_D.to(dtype)
    if kind == "mse":
        per_layer_L_N = (s - t).pow(2).mean(dim=-1)
    elif kind == "cosine":
        norms_L_N = (s.norm(dim=-1) * t.norm(dim=-1)).clamp_min(COSINE_EPS)
        per_layer_L_N = 1.0 - (s * t).sum(dim=-1) / norms_L_N
    else:
        raise ValueError(f"hidden loss {kind!r} is unknown; use one of {HIDDEN_LOSSES}")
    return per_layer_L_N.mean(dim=0)

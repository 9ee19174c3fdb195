"""Independent float64 references for the loss tests: explicit p * log(p / q) sums on probabilities,
no log-softmax, no logaddexp, none of the package's code."""

from __future__ import annotations

import torch

Tensor = torch.Tensor

# (name, coef) cases every test runs through: all GKD betas, both skew directions, TV.
BETAS = (0.0, 1e-4, 0.1, 0.5, 0.9, 1 - 1e-4, 1.0)
CASES = (
    [("generalized_jsd", b) for b in BETAS]
    + [("forward_kl", 0.0), ("reverse_kl", 0.0), ("total_variation", 0.0)]
    + [("skew_forward_kl", a) for a in (0.0, 0.1, 0.5, 1.0)]
    + [("skew_reverse_kl", a) for a in (0.0, 0.1, 0.5, 1.0)]
)


def softmax64(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Naive softmax in float64 (shifted by the row max only to avoid overflow)."""
    z = logits.double() / temperature
    e = (z - z.max(-1, keepdim=True).values.detach()).exp()
    return e / e.sum(-1, keepdim=True)


def kl(p: Tensor, q: Tensor) -> Tensor:
    """sum p log(p / q) over the last axis, with 0 log 0 = 0."""
    safe_p = torch.where(p > 0, p, torch.ones_like(p))
    safe_q = torch.where(p > 0, q, torch.ones_like(q))
    return torch.where(p > 0, p * torch.log(safe_p / safe_q), torch.zeros_like(p)).sum(-1)


def ref_from_probs(name: str, coef: float, ps: Tensor, pt: Tensor) -> Tensor:
    """Per-position divergence [...] from probabilities [..., V] (float64)."""
    if name == "forward_kl" or (name == "generalized_jsd" and coef == 0.0):
        return kl(pt, ps)
    if name == "reverse_kl" or (name == "generalized_jsd" and coef == 1.0):
        return kl(ps, pt)
    if name == "generalized_jsd":
        m = coef * pt + (1 - coef) * ps
        return coef * kl(pt, m) + (1 - coef) * kl(ps, m)
    if name == "skew_forward_kl":
        return kl(pt, coef * pt + (1 - coef) * ps)
    if name == "skew_reverse_kl":
        return kl(ps, coef * ps + (1 - coef) * pt)
    if name == "total_variation":
        return 0.5 * (ps - pt).abs().sum(-1)
    raise KeyError(name)


def reduce64(per_token: Tensor, mask: Tensor | None, reduction: str) -> Tensor:
    if mask is not None:
        per_token = per_token * mask.double()
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    count = per_token.numel() if mask is None else int(mask.sum())
    return per_token.sum() / count if count else per_token.sum() * 0.0


def ref_divergence(name, coef, student_logits, teacher_logits, temperature=1.0, mask=None,
                   reduction="mean"):  # fmt: skip
    """The whole loss from logits, in float64."""
    per_token = ref_from_probs(
        name, coef, softmax64(student_logits, temperature), softmax64(teacher_logits, temperature)
    )
    return reduce64(per_token, mask, reduction)


def random_mask(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Random bool mask [B, T] with row 0 entirely masked (an empty row) and row 1 full."""
    mask = torch.rand(shape, generator=generator) > 0.4
    mask[0] = False
    if shape[0] > 1:
        mask[1] = True
    return mask

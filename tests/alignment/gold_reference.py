"""Materialized float64 references for ``alignment.spans.gold`` (shared by its test modules)."""

from __future__ import annotations

import math

import torch

from alignment.spans.chain_rule import span_anchor_positions, span_distributions
from alignment.types import SideLogits


def ext_kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL of positive measures: sum p log(p / q) - p + q."""
    p, q = lp.exp(), lq.exp()
    return (p * (lp - lq) - p + q).sum(-1)


def ref_gjsd(la: torch.Tensor, lb: torch.Tensor, beta: float) -> torch.Tensor:
    if beta == 0.0:
        return ext_kl(lb, la)
    if beta == 1.0:
        return ext_kl(la, lb)
    lm = torch.logaddexp(la + math.log(1 - beta), lb + math.log(beta))
    return beta * ext_kl(lb, lm) + (1 - beta) * ext_kl(la, lm)


def ref_uld(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    n = max(p.shape[-1], q.shape[-1])
    ps = torch.nn.functional.pad(p.sort(-1, descending=True).values, (0, n - p.shape[-1]))
    qs = torch.nn.functional.pad(q.sort(-1, descending=True).values, (0, n - q.shape[-1]))
    return (ps - qs).abs().sum(-1)


def reference_terms(
    student: SideLogits, teacher: SideLogits, ms, mt, beta: float, anchor: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(matched_B_S, unmatched_B_S, mask_B_S)`` from the definition, in the logits' dtype:
    span distributions; where the two anchor tokens are a matched pair, the matched columns go to
    the GJSD and the rest to ULD; elsewhere only the two anchor entries (both the probability of
    the span) go to the GJSD."""
    Vs, Vt = student.logits_B_T_V.shape[-1], teacher.logits_B_T_V.shape[-1]
    la, mask_s = span_distributions(
        student.logits_B_T_V, student.input_ids_B_T, student.span_B_T, anchor,
        temperature=student.temperature,
    )  # fmt: skip
    lb, mask_t = span_distributions(
        teacher.logits_B_T_V, teacher.input_ids_B_T, teacher.span_B_T, anchor,
        temperature=teacher.temperature,
    )  # fmt: skip
    S = max(la.shape[1], lb.shape[1])
    la = torch.nn.functional.pad(la, (0, 0, 0, S - la.shape[1]))
    lb = torch.nn.functional.pad(lb, (0, 0, 0, S - lb.shape[1]))
    mask_s = torch.nn.functional.pad(mask_s, (0, S - mask_s.shape[1]))
    mask_t = torch.nn.functional.pad(mask_t, (0, S - mask_t.shape[1]))
    keep_s = torch.ones(Vs, dtype=torch.bool)
    keep_t = torch.ones(Vt, dtype=torch.bool)
    keep_s[ms], keep_t[mt] = False, False
    pos_s, _ = span_anchor_positions(student.span_B_T, anchor, S)
    pos_t, _ = span_anchor_positions(teacher.span_B_T, anchor, S)
    s_to_t = dict(zip(ms.tolist(), mt.tolist(), strict=True))
    matched = torch.zeros(la.shape[:2], dtype=la.dtype)
    unmatched = torch.zeros(la.shape[:2], dtype=la.dtype)
    mask = mask_s & mask_t
    for b in range(la.shape[0]):
        for k in range(S):
            if not mask[b, k]:
                continue
            sa = int(student.input_ids_B_T[b, pos_s[b, k]])
            ta = int(teacher.input_ids_B_T[b, pos_t[b, k]])
            if s_to_t.get(sa) == ta:
                ks, kt = keep_s, keep_t
                matched[b, k] = ref_gjsd(la[b, k, ms], lb[b, k, mt], beta) if len(ms) else 0.0
            elif len(ms):
                ks, kt = torch.ones(Vs, dtype=torch.bool), torch.ones(Vt, dtype=torch.bool)
                ks[sa], kt[ta] = False, False
                matched[b, k] = ref_gjsd(la[b, k, [sa]], lb[b, k, [ta]], beta)
            else:
                ks, kt = keep_s, keep_t
            unmatched[b, k] = ref_uld(la[b, k].exp()[ks], lb[b, k].exp()[kt])
    return matched, unmatched, mask

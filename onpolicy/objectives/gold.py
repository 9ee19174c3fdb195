"""The ``gold`` objective: on-policy distillation across tokenizers, GOLD-style.

Per aligned span (``onpolicy.teacher.cross``) the student's and the teacher's distributions are
compared: on the vocabulary pairs that spell the same bytes with a generalized JSD (``beta``), on
the rest with ULD (sorted-probability L1); see ``alignment.spans.gold``. Counted units are the
spans with tokens on both sides (``LossOutput.num_tokens``).

``matched`` picks what a vocabulary pair compares:

* ``prefix`` (default, ``alignment.gold_prefix_terms``): each side's prefix marginal at the span
  start (the probability that the text goes on with the pair's bytes, summed over the tokens
  that start with them), the same event on both sides; no chain-rule scale, so spans where the
  student went off-track do not dominate, and with ``0 < beta < 1`` each span's term is bounded.
* ``token``: TRL's GOLD semantics (``alignment.gold_terms``): the pair's token probabilities in
  the span distributions (anchor distribution times the chain-rule probability of the span's other
  tokens). Not a training choice: it collapsed the student on the arithmetic cross pair (exact
  match 0.000, ``docs/results/compare-arithmetic-cross.md``); it stays for parity runs against
  TRL (``benchmarks/e2e.py --gold matched=token``) and says so in a warning when chosen.

``reference_kl`` (default 1.0) adds KL(student || the initial student) on the student's
tokens: span targets cannot tell two tokenizations of a text apart, and without an anchor a BPE
student drifts to splits it never trained on (``onpolicy.objectives.reference.FrozenReference``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Literal

from onpolicy.errors import ConfigError
from onpolicy.objectives.base import LossOutput, register_objective
from onpolicy.objectives.common import check_temperature, check_unit
from onpolicy.objectives.cross import AnchoredCrossObjective, cross_sides, side_tries
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout

TOKEN_SEMANTICS_WARNING = (
    "gold matched=token is TRL's GOLD semantics, kept for parity runs: it collapsed the student "
    "on the arithmetic cross pair (docs/results/compare-arithmetic-cross.md); train with the "
    "default matched=prefix"
)


@register_objective("gold")
@dataclass
class GOLD(AnchoredCrossObjective):
    """GOLD-style hybrid loss on the student's own samples.

    Attributes:
        beta: generalized JSD coefficient on matched pairs (1 = reverse KL, 0 = forward KL; 0.5
            by default: bounded per span).
        matched: ``prefix`` (same events on both sides, default) or ``token`` (TRL's semantics,
            for parity runs only: ``TOKEN_SEMANTICS_WARNING``).
        matched_weight, unmatched_weight: weights of the matched (JSD) and unmatched (ULD) terms.
        temperature: softmax temperature of both sides (``teacher_temperature`` overrides the
            teacher's).
        top_k: compare only the top ``k`` unmatched probabilities exactly (memory), None = all.
        reference_kl: weight of KL(student || its initial weights) summed over the
            completion tokens (``onpolicy.objectives.reference.FrozenReference``); 0 turns it off.
    """

    beta: float = 0.5
    matched: Literal["prefix", "token"] = "prefix"
    matched_weight: float = 1.0
    unmatched_weight: float = 1.0
    temperature: float = 1.0
    teacher_temperature: float | None = None
    top_k: int | None = None
    reference_kl: float = 1.0

    name: ClassVar[str] = "gold"

    def __post_init__(self) -> None:
        check_unit("beta", self.beta)
        check_temperature(self.temperature)
        if self.matched not in ("prefix", "token"):
            raise ConfigError(f"gold option matched={self.matched!r}; use 'prefix' or 'token'")
        if self.matched == "token":
            warnings.warn(TOKEN_SEMANTICS_WARNING, UserWarning, stacklevel=1)  # once per process

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        s_side, t_side, cross = cross_sides(
            student, rollout, teacher_scores, self.name, self.temperature, self.teacher_temperature
        )
        device = s_side.logits_B_T_V.device
        ms, mt = cross.matched_student_ids_M.to(device), cross.matched_teacher_ids_M.to(device)
        if self.matched == "token":
            from alignment import gold_terms

            terms = gold_terms(s_side, t_side, ms, mt, self.beta, top_k=self.top_k)
        else:
            from alignment import gold_prefix_terms

            s_trie, t_trie = side_tries(cross, s_side, t_side, "gold matched=prefix (else: token)")
            terms = gold_prefix_terms(
                s_side, t_side, s_trie, t_trie, ms, mt, self.beta, top_k=self.top_k
            )
        mask = terms.mask_B_S
        matched = terms.matched_B_S[mask].sum()
        unmatched = terms.unmatched_B_S[mask].sum()
        loss_sum = self.matched_weight * matched + self.unmatched_weight * unmatched
        metrics = {
            "gold/matched_sum": float(matched.detach()),
            "gold/unmatched_sum": float(unmatched.detach()),
        }
        loss_sum, anchor = self._reference.add_to(
            self.reference_kl, loss_sum, student, rollout, s_side, cross, self.name
        )
        metrics.update(anchor)
        return LossOutput(loss_sum=loss_sum, num_tokens=int(mask.sum()), metrics=metrics)

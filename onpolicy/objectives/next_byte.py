"""The ``next_byte`` objective: on-policy distillation across tokenizers on next-byte marginals.

At every byte of the student's completion (``alignment.spans.next_byte``) each model's next-token
distribution is projected onto the next byte: exactly where the model is at a token boundary (for
both at every span start, and at the stop), and as the within-token conditional (the tokens that
extend the bytes already written) inside a token. The two 257-class distributions (256 bytes + a
stop class) are compared with the generalized JSD (``beta``; bounded for ``0 < beta < 1``, so
positions where the student went off-track cannot dominate). No vocabulary map is needed and the
comparison is independent of how either side splits the text.

Counted units (``LossOutput.num_tokens``) are the compared byte positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from onpolicy.objectives.base import LossOutput, register_objective
from onpolicy.objectives.common import check_temperature, check_unit
from onpolicy.objectives.cross import AnchoredCrossObjective, cross_sides, side_tries
from onpolicy.teacher.types import TeacherScores
from onpolicy.types import Rollout


@register_objective("next_byte")
@dataclass
class NextByte(AnchoredCrossObjective):
    """Generalized JSD between next-byte distributions on the student's own samples.

    Attributes:
        beta: generalized JSD coefficient (0 = forward KL(teacher||student), 1 = reverse KL;
            0.5 by default: bounded per position).
        within_tokens: also compare inside tokens (the within-token conditional); False keeps the
            positions where both sides are at a token boundary (exact marginals only).
        temperature: softmax temperature of both sides (``teacher_temperature`` overrides the
            teacher's).
        reference_kl: weight of KL(student || its initial weights) summed over the
            completion tokens (``onpolicy.objectives.reference.FrozenReference``): anchors the
            student's tokenization, which a byte-level target cannot see; 0 turns it off.
    """

    beta: float = 0.5
    within_tokens: bool = True
    temperature: float = 1.0
    teacher_temperature: float | None = None
    reference_kl: float = 0.1

    name: ClassVar[str] = "next_byte"

    def __post_init__(self) -> None:
        check_unit("beta", self.beta)
        check_temperature(self.temperature)

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        from alignment import next_byte_terms

        s_side, t_side, cross = cross_sides(
            student, rollout, teacher_scores, self.name, self.temperature, self.teacher_temperature
        )
        s_trie, t_trie = side_tries(cross, s_side, t_side, "objective 'next_byte'")
        terms = next_byte_terms(s_side, t_side, s_trie, t_trie, self.beta, self.within_tokens)
        divergence_sum = terms.divergence_E.sum()
        n = int(terms.divergence_E.shape[0])
        loss_sum, metrics = self._reference.add_to(
            self.reference_kl, divergence_sum, student, rollout, s_side, cross, self.name
        )
        metrics["next_byte/divergence_sum"] = float(divergence_sum.detach())
        metrics["next_byte/exact_share"] = float(terms.exact_E.float().mean()) if n else 0.0
        return LossOutput(loss_sum=loss_sum, num_tokens=n, metrics=metrics)

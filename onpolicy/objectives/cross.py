"""Cross-tokenizer plumbing for the objectives: each side's logits as ``alignment.SideLogits``.

Both sides' rows are laid out as *one sequence* (``B = 1``): ``input_ids = [x, c^0_0, ...,
c^0_{C_0-1}, c^1_0, ...]`` (``x``: row 0's last prompt token, nothing predicts it), ``logits[t]`` =
the packed row ``t`` (it predicts window token ``t + 1``: the ``alignment`` convention), one spare
row at the end (predicts nothing, never gathered), and ``span = [-1, spans of row 0, spans of
row 1 + S_0, ...]`` (row ``b``'s span ids offset by the spans of the rows before it, the same on
both sides). Every ``alignment`` loss works per span (rows only index spans), so its per-span
terms are those of the per-row windows, and the packed logits are the window with no copy when
their storage holds the spare row (the teacher's, ``onpolicy.forward.spare_row_empty``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from onpolicy.errors import ConfigError
from onpolicy.forward import split_rows, with_spare_row
from onpolicy.losses import token_logprobs
from onpolicy.objectives.base import BatchSource
from onpolicy.objectives.common import require_cross, student_forward, topk_temperature_limit
from onpolicy.objectives.reference import FrozenReference, ReferencePolicy
from onpolicy.teacher.types import CrossTeacherScores, TeacherScores
from onpolicy.types import Rollout


def flat_window(
    logits_N_V: torch.Tensor,
    first_id: int,
    completion_ids_B: list[list[int]],
    span_B: list[torch.Tensor],
    num_spans_B: list[int],
    temperature: float,
):
    """``alignment.SideLogits`` of all rows as one sequence (see the module docstring)."""
    from alignment import SideLogits

    offsets = [0]
    for n in num_spans_B[:-1]:
        offsets.append(offsets[-1] + n)
    ids = [torch.tensor([first_id], dtype=torch.long)]
    span = [torch.full((1,), -1, dtype=torch.long)]
    for c, sp, off in zip(completion_ids_B, span_B, offsets, strict=True):
        ids.append(torch.tensor(c, dtype=torch.long))
        sp = sp.long().cpu()
        span.append(torch.where(sp >= 0, sp + off, sp))
    dev = logits_N_V.device
    logits = with_spare_row(logits_N_V)[None]  # (1, N + 1, V)
    return SideLogits(logits, torch.cat(ids)[None].to(dev), torch.cat(span)[None].to(dev),
                      temperature)  # fmt: skip


def cross_sides(
    student: torch.nn.Module,
    rollout: Rollout,
    scores: TeacherScores | None,
    name: str,
    temperature: float,
    teacher_temperature: float | None = None,
):
    """(student SideLogits with gradients, teacher SideLogits, the cross scores), each side's
    rows as one sequence (``flat_window``)."""
    cross = require_cross(scores, name).cross
    fwd = student_forward(student, rollout, None)
    s_side = flat_window(
        fwd.logits_N_V, rollout.prompt_ids_B[0][-1] if rollout.prompt_ids_B else 0,
        rollout.completion_ids_B, cross.student_span_B, cross.num_spans_B, temperature,
    )  # fmt: skip
    t_side = flat_window(
        cross.logits_Nt_V.to(fwd.logits_N_V.device),
        cross.prompt_ids_B[0][-1] if cross.prompt_ids_B else 0, cross.completion_ids_B,
        cross.teacher_span_B, cross.num_spans_B, teacher_temperature or temperature,
    )  # fmt: skip
    return s_side, t_side, cross


def span_advantages_and_logprobs(
    student: torch.nn.Module, rollout: Rollout, scores: TeacherScores
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sampled-token advantages across tokenizers, by the chain rule over aligned spans.

    Returns ``(student_logprobs_N, advantage_N, targets_N)`` over the student's completion tokens:
    each span's ``log P_teacher(span) - log P_student(span)`` (detached) sits on the span's last
    student token, 0 on the others; a row's advantages sum to ``log P_t(text) - log P_s(text)`` of
    its aligned text (plus the stop span).
    """
    from alignment import span_logprobs, span_sampled_reward, span_values_to_tokens

    cross: CrossTeacherScores = scores.cross
    fwd = student_forward(student, rollout, None)
    logp_N = token_logprobs(fwd.logits_N_V, fwd.targets_N)
    advantages = []
    t_rows = split_rows(cross.token_logprobs_Nt.to(logp_N.device), cross.num_tokens_B)
    for b, s_lp in enumerate(split_rows(logp_N.detach(), fwd.num_tokens_B)):
        S = cross.num_spans_B[b]
        s_span = cross.student_span_B[b].to(logp_N.device)[None]
        s_span_lp, s_mask = span_logprobs(s_lp[None], s_span, S)
        t_span = cross.teacher_span_B[b].to(logp_N.device)[None]
        t_span_lp, t_mask = span_logprobs(t_rows[b][None], t_span, S)
        reward = span_sampled_reward(s_span_lp, t_span_lp, s_mask & t_mask)
        advantages.append(span_values_to_tokens(reward, s_span)[0])
    advantage_N = torch.cat(advantages) if advantages else logp_N.new_zeros(0)
    return logp_N, advantage_N.detach(), fwd.targets_N


@dataclass
class AnchoredCrossObjective:
    """What ``next_byte``, ``gold`` and ``uld`` share: trained on the student's own samples,
    scored by a teacher, and anchored by ``reference_kl`` to the initial student through a
    ``FrozenReference`` (subclasses declare ``temperature``, ``teacher_temperature``,
    ``reference_kl`` and ``loss``)."""

    _reference: FrozenReference = field(
        default_factory=FrozenReference, init=False, repr=False, compare=False
    )

    needs_teacher: ClassVar[bool] = True

    def batch_source(self, step: int) -> BatchSource:
        return "student"

    def set_reference(self, reference: ReferencePolicy) -> None:
        """The student's initial policy for ``reference_kl`` (``onpolicy.trainer.setup``)."""
        self._reference.set(reference)

    def topk_teacher_limit(self) -> str | None:
        """A top-k teacher serves ``temperature`` 1 with ``teacher_temperature`` unset or 1."""
        return topk_temperature_limit(self.temperature, self.teacher_temperature)


def side_tries(cross: CrossTeacherScores, s_side, t_side, needed_by: str) -> tuple:
    """``(student trie, teacher trie)`` (``alignment.byte_trie``) over each side's
    padded vocabulary, from the tokenizers the cross scores carry."""
    from alignment import byte_trie

    if cross.student_tokenizer is None or cross.teacher_tokenizer is None:
        raise ConfigError(
            f"{needed_by} needs the tokenizers in the cross scores; score with "
            "onpolicy.teacher.LocalTeacher (mode cross)"
        )
    s_trie = byte_trie(cross.student_tokenizer, s_side.logits_B_T_V.shape[-1])
    t_trie = byte_trie(cross.teacher_tokenizer, t_side.logits_B_T_V.shape[-1])
    return s_trie, t_trie

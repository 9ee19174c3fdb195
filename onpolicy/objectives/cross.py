"""Cross-tokenizer plumbing for the objectives: each side's logits as ``alignment.SideLogits``.

A side's *window* for row ``b`` is its last prompt token followed by its completion tokens:
``input_ids = [x_{P-1}, c_0, ..., c_{C-1}]``, ``logits[j]`` = the model's logits at prompt position
``P - 1 + j`` (they predict ``c_j``, i.e. window token ``j + 1``: the ``alignment`` convention), and
``span = [-1, span(c_0), ...]``. Only completion positions are ever projected; the windows are
right-padded to a common length (padding: span ``-1``, zero logits, never gathered).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from onpolicy.forward import split_rows
from onpolicy.objectives.common import require_cross, student_forward
from onpolicy.teacher.types import CrossTeacherScores, TeacherScores
from onpolicy.types import Rollout


def side_window(
    logits_N_V: torch.Tensor,
    num_tokens_B: list[int],
    last_prompt_B: list[int],
    completion_ids_B: list[list[int]],
    span_B: list[torch.Tensor],
    temperature: float,
):
    """``alignment.SideLogits`` of one side's windows (see the module docstring)."""
    from alignment.types import SideLogits

    B, V = len(num_tokens_B), logits_N_V.shape[-1]
    T = 1 + max(num_tokens_B, default=0)
    logits = logits_N_V.new_zeros((B, T, V))
    ids = torch.zeros((B, T), dtype=torch.long)
    span = torch.full((B, T), -1, dtype=torch.long)
    for b, rows in enumerate(split_rows(logits_N_V, num_tokens_B)):  # one copy per row
        C = num_tokens_B[b]
        logits[b, :C] = rows
        ids[b, 0] = last_prompt_B[b]
        ids[b, 1 : C + 1] = torch.tensor(completion_ids_B[b], dtype=torch.long)
        span[b, 1 : C + 1] = span_B[b]
    return SideLogits(logits, ids.to(logits.device), span.to(logits.device), temperature)


def cross_sides(
    student: torch.nn.Module,
    rollout: Rollout,
    scores: TeacherScores | None,
    name: str,
    temperature: float,
    teacher_temperature: float | None = None,
):
    """(student SideLogits with gradients, teacher SideLogits, the cross scores)."""
    cross = require_cross(scores, name).cross
    fwd = student_forward(student, rollout, None)
    s_side = side_window(
        fwd.logits_N_V, fwd.num_tokens_B, [p[-1] for p in rollout.prompt_ids_B],
        rollout.completion_ids_B, cross.student_span_B, temperature,
    )  # fmt: skip
    t_side = side_window(
        cross.logits_Nt_V.to(fwd.logits_N_V.device), cross.num_tokens_B,
        [p[-1] for p in cross.prompt_ids_B], cross.completion_ids_B, cross.teacher_span_B,
        teacher_temperature or temperature,
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
    from alignment.spans_math import span_logprobs, span_sampled_reward, span_values_to_tokens

    cross: CrossTeacherScores = scores.cross
    fwd = student_forward(student, rollout, None)
    logp_N = torch.log_softmax(fwd.logits_N_V.float(), -1).gather(1, fwd.targets_N[:, None])[:, 0]
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


class FrozenReference:
    """The student as it was at its first loss call (a frozen copy), for ``reference_kl``.

    A byte-level or span-level cross-tokenizer target cannot tell two tokenizations of the same
    text apart, so nothing in it keeps a BPE student on its own (canonical) tokenization; on the
    arithmetic pair the student drifted to splits it was never trained on (``0|`` then ``#``) and
    collapsed. KL(student || reference) on the student's tokens (the RLHF-style KL to the initial
    policy) anchors those token-level choices. The copy is taken once: a resumed run anchors to
    the weights it resumed from.
    """

    def __init__(self) -> None:
        self.model: Any = None

    def kl_sum(self, student: torch.nn.Module, rollout: Rollout, s_side, cross) -> torch.Tensor:
        """KL(student || reference) summed over the completion tokens, at ``s_side``'s
        temperature (the windows' padded rows hold zero logits on both sides and add 0)."""
        if self.model is None:
            base = getattr(student, "module", student)
            self.model = copy.deepcopy(base).eval().requires_grad_(False)
        tau = s_side.temperature
        with torch.no_grad():
            fwd = student_forward(self.model, rollout, None)
            ref = side_window(
                fwd.logits_N_V, fwd.num_tokens_B, [p[-1] for p in rollout.prompt_ids_B],
                rollout.completion_ids_B, cross.student_span_B, tau,
            )  # fmt: skip
            log_r = torch.log_softmax(ref.logits_B_T_V.float() / tau, -1)
        log_s = torch.log_softmax(s_side.logits_B_T_V.float() / tau, -1)
        return (log_s.exp() * (log_s - log_r)).sum()

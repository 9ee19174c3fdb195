"""Cross-tokenizer plumbing for the objectives: each side's logits as ``alignment.SideLogits``.

A side's *window* for row ``b`` is its last prompt token followed by its completion tokens:
``input_ids = [x_{P-1}, c_0, ..., c_{C-1}]``, ``logits[j]`` = the model's logits at prompt position
``P - 1 + j`` (they predict ``c_j``, i.e. window token ``j + 1``: the ``alignment`` convention), and
``span = [-1, span(c_0), ...]``. Only completion positions are ever projected; the windows are
right-padded to a common length (padding: span ``-1``, zero logits, never gathered).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from onpolicy.errors import ConfigError
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


@dataclass(frozen=True)
class ReferencePolicy:
    """The student's *initial* policy for ``reference_kl``, handed to an objective by whoever
    built the student (``onpolicy.trainer.setup``: before ``prepare`` and any checkpoint restore).

    Attributes:
        model: a frozen module computing the initial policy (a full student: a copy of the weights
            as loaded from their source); None = the student passed to ``loss`` itself.
        adapters_off: run ``model`` (or the student) with its LoRA adapters disabled: PEFT adapters
            start as the identity, so the base model is the initial student, with no copy.
    """

    model: torch.nn.Module | None = None
    adapters_off: bool = False


@runtime_checkable
class UsesReference(Protocol):
    """An objective with a ``reference_kl`` term (``next_byte``, ``gold``, ``uld``)."""

    reference_kl: float

    def set_reference(self, reference: ReferencePolicy) -> None: ...


def initial_reference(student: torch.nn.Module, full_copy: Any = None) -> ReferencePolicy:
    """The ``ReferencePolicy`` of a freshly loaded (not yet prepared, not restored) ``student``.

    A LoRA student: its base with adapters off (no copy); when the student is sharded in place
    (FSDP / DeepSpeed ZeRO-3) ``full_copy`` is the trainer's unsharded ``FullCopy`` module, whose
    frozen base weights never change. A full student: a frozen copy of ``student`` taken now
    (under sharding, before ``prepare`` shards it), so a resumed run anchors to the loaded weights.
    """
    from onpolicy.models import is_peft

    if is_peft(student):
        return ReferencePolicy(model=full_copy, adapters_off=True)
    return ReferencePolicy(model=copy.deepcopy(student).eval().requires_grad_(False))


class FrozenReference:
    """KL(student || the student's initial policy) on the student's tokens, for ``reference_kl``.

    A byte-level or span-level cross-tokenizer target cannot tell two tokenizations of the same
    text apart, so nothing in it keeps a BPE student on its own (canonical) tokenization; on the
    arithmetic pair the student drifted to splits it was never trained on (``0|`` then ``#``) and
    collapsed. KL(student || reference) on the student's tokens (the RLHF-style KL to the initial
    policy) anchors those token-level choices.

    The reference is a ``ReferencePolicy`` given with ``set`` (the trainer does, so a resumed run
    anchors to the initial weights, not the resumed ones). Without one (a user's own loop): a LoRA
    student uses its base with adapters off; a full student is copied at the first loss call.
    """

    def __init__(self) -> None:
        self.policy: ReferencePolicy | None = None

    def set(self, reference: ReferencePolicy) -> None:
        self.policy = reference

    def _policy(self, student: torch.nn.Module) -> ReferencePolicy:
        if self.policy is None:
            self.policy = initial_reference(getattr(student, "module", student))
        return self.policy

    def logits(self, student: torch.nn.Module, rollout: Rollout):
        """The reference's ``student_forward`` on ``rollout`` (no gradients)."""
        from onpolicy.models import adapters_disabled

        ref = self._policy(student)
        model = ref.model if ref.model is not None else getattr(student, "module", student)
        with torch.no_grad():
            if not ref.adapters_off:
                return student_forward(model, rollout, None)
            with adapters_disabled(model):
                return student_forward(model, rollout, None)

    def kl_sum(self, student: torch.nn.Module, rollout: Rollout, s_side, cross) -> torch.Tensor:
        """KL(student || reference) summed over the completion tokens, at ``s_side``'s
        temperature (the windows' padded rows hold zero logits on both sides and add 0)."""
        tau = s_side.temperature
        fwd = self.logits(student, rollout)
        with torch.no_grad():
            ref = side_window(
                fwd.logits_N_V, fwd.num_tokens_B, [p[-1] for p in rollout.prompt_ids_B],
                rollout.completion_ids_B, cross.student_span_B, tau,
            )  # fmt: skip
            log_r = torch.log_softmax(ref.logits_B_T_V.float() / tau, -1)
        log_s = torch.log_softmax(s_side.logits_B_T_V.float() / tau, -1)
        return (log_s.exp() * (log_s - log_r)).sum()

    def add_to(
        self,
        weight: float,
        loss_sum: torch.Tensor,
        student,
        rollout: Rollout,
        s_side,
        cross,
        prefix: str,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss_sum + weight * KL(student || reference), {f"{prefix}/reference_kl_sum": ...})``;
        ``weight = 0``: ``(loss_sum, {})`` without running the reference."""
        if not weight:
            return loss_sum, {}
        ref_kl = self.kl_sum(student, rollout, s_side, cross)
        return loss_sum + weight * ref_kl, {f"{prefix}/reference_kl_sum": float(ref_kl.detach())}


def side_tries(cross: CrossTeacherScores, s_side, t_side, needed_by: str) -> tuple:
    """``(student trie, teacher trie)`` (``alignment.byte_marginal.byte_trie``) over each side's
    padded vocabulary, from the tokenizers the cross scores carry."""
    from alignment.byte_marginal import byte_trie

    if cross.student_tokenizer is None or cross.teacher_tokenizer is None:
        raise ConfigError(
            f"{needed_by} needs the tokenizers in the cross scores; score with "
            "onpolicy.teacher.LocalTeacher (mode cross)"
        )
    s_trie = byte_trie(cross.student_tokenizer, s_side.logits_B_T_V.shape[-1])
    t_trie = byte_trie(cross.teacher_tokenizer, t_side.logits_B_T_V.shape[-1])
    return s_trie, t_trie

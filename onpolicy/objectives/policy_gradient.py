"""The ``policy_gradient`` objective: the sampled-token form of on-policy distillation.

Per completion token ``y_t`` the advantage is
``kl_coef * (log p_teacher(y_t) - log p_student(y_t))``
(a one-sample estimate of ``-KL(student || teacher)`` there), plus an optional user reward per
sequence (``reward_fn(rollout) -> [B] floats``) given to every token of that sequence. The loss is
``onpolicy.losses.policy_gradient_loss``: importance-weighted by ``exp(log p_student - log
p_engine)`` against the rollout engine's logprobs (PPO clipping or truncated IS). With a teacher on
another tokenizer the advantage is per aligned span (chain rule, exact on the sampled text: see
``alignment.span_sampled_reward``), placed on each span's last student token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from onpolicy.losses import policy_gradient_loss, token_logprobs
from onpolicy.objectives.base import BatchSource, LossOutput, TeacherOutput, register_objective
from onpolicy.objectives.common import require_same, student_forward
from onpolicy.teacher.types import CrossScores, TeacherScores
from onpolicy.types import Rollout

RewardFn = Callable[[Rollout], Sequence[float]]


@register_objective("policy_gradient")
@dataclass
class PolicyGradient:
    """Sampled-token distillation as a policy gradient (see the module docstring).

    Attributes:
        kl_coef: weight of the distillation advantage (0 = the user reward alone).
        clip_mode: ``ppo`` (clipped surrogate) or ``tis`` (truncated importance sampling).
        clip_eps: PPO clip range. tis_cap: TIS weight cap.
        reward_fn: optional ``rollout -> [B]`` per-sequence rewards, added to each token's
            advantage (``onpolicy.rewards.TaskReward``: a task reward, group-normalized, from
            config's ``reward:`` block).
        advantage_norm: ``none``, or ``batch``: the micro-batch's per-token advantages whitened
            (``(a - mean) / (std + 1e-6)`` over its completion tokens) so the step size does not
            depend on the scale of the log-ratios and rewards.
    """

    kl_coef: float = 1.0
    clip_mode: str = "ppo"
    clip_eps: float = 0.2
    tis_cap: float = 2.0
    reward_fn: RewardFn | None = None
    advantage_norm: Literal["none", "batch"] = "none"

    name: ClassVar[str] = "policy_gradient"
    needs_teacher: ClassVar[bool] = True

    def batch_source(self, step: int) -> BatchSource:
        return "student"

    def teacher_output(self) -> TeacherOutput:
        """Only each completion token's teacher log-probability (same or cross tokenizer)."""
        return "token"

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        student_lp_N, advantage_N, targets, reward_metrics = self.advantages(
            student, rollout, teacher_scores
        )
        behaviour_N = _behaviour(rollout, student_lp_N)
        loss_sum = policy_gradient_loss(
            student_lp_N, behaviour_N, advantage_N, clip_mode=self.clip_mode,
            clip_eps=self.clip_eps, tis_cap=self.tis_cap, reduction="sum",
        )  # fmt: skip
        n = int(targets.numel())
        bad = ~torch.isfinite(behaviour_N) | ~torch.isfinite(advantage_N)
        if bool(bad.any()):  # clipping can hide a bad input (ratio exp(-inf) = 0): say it loudly,
            # a NaN loss, which the trainer counts and skips (``train.max_nonfinite``)
            loss_sum = torch.where(bad.any(), torch.full_like(loss_sum, float("nan")), loss_sum)
        metrics = {
            "advantage_sum": float(advantage_N.sum()),
            "pg_loss_sum": float(loss_sum.detach()),
            "pg/nonfinite_inputs_sum": float(bad.sum()),
            **reward_metrics,
        }
        return LossOutput(loss_sum=loss_sum, num_tokens=n, metrics=metrics)

    def advantages(
        self, student, rollout: Rollout, teacher_scores: TeacherScores | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        """``(student_lp_N, advantage_N, targets, metrics)``: the student's log-prob of each
        completion token (with grad) and its advantage (no grad): ``kl_coef * (teacher lp -
        student lp)`` plus its row's reward, whitened when ``advantage_norm == "batch"``. A
        ``TaskReward`` also logs its raw rewards (``task_reward_sum`` over ``task_rows_sum``)."""
        if isinstance(teacher_scores, CrossScores):
            from onpolicy.objectives.cross import span_advantages_and_logprobs

            student_lp_N, advantage_N, targets = span_advantages_and_logprobs(
                student, rollout, teacher_scores
            )
        else:
            scores = require_same(teacher_scores, self.name)
            fwd = student_forward(student, rollout, scores.vocab_size)
            student_lp_N = token_logprobs(fwd.logits_N_V, fwd.targets_N)
            teacher_lp_N = scores.token_logprobs(fwd.targets_N).to(student_lp_N.device)
            advantage_N = (teacher_lp_N - student_lp_N).detach()
            targets = fwd.targets_N
        rewards_N, metrics = self._rewards(rollout, student_lp_N)
        advantage_N = self.kl_coef * advantage_N + rewards_N
        if self.advantage_norm == "batch":
            advantage_N = whiten(advantage_N)
        return student_lp_N, advantage_N, targets, metrics

    def _rewards(
        self, rollout: Rollout, like_N: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Each sequence's user reward repeated over its completion tokens ([N]), and metrics."""
        from onpolicy.rewards import TaskReward

        if self.reward_fn is None:
            return torch.zeros_like(like_N), {}
        metrics: dict[str, float] = {}
        if isinstance(self.reward_fn, TaskReward):  # raw rewards computed once, logged
            raw = self.reward_fn.scores(rollout)
            rewards = self.reward_fn.advantages(raw, rollout)
            metrics = {"task_reward_sum": float(sum(raw)), "task_rows_sum": float(len(raw))}
        else:
            rewards = [float(r) for r in self.reward_fn(rollout)]
        if len(rewards) != len(rollout):
            raise ValueError(f"reward_fn returned {len(rewards)} rewards for {len(rollout)} rows")
        counts = torch.tensor([len(c) for c in rollout.completion_ids_B])
        per_row = torch.tensor(rewards, dtype=like_N.dtype)
        return per_row.repeat_interleave(counts).to(like_N.device), metrics


def _behaviour(rollout: Rollout, student_lp_N: torch.Tensor) -> torch.Tensor:
    """The engine's logprobs packed like the completion positions, as given: a NaN/inf one (an
    engine fault, or fixed completions no engine sampled) makes the loss NaN, which the trainer
    counts and skips (``train.max_nonfinite``) instead of training on a made-up ratio."""
    flat = [lp for row in rollout.sampling_logprobs_B for lp in row]
    if len(flat) != student_lp_N.numel():
        raise ValueError(
            f"the rollout has {len(flat)} sampling logprobs for {student_lp_N.numel()} completion "
            "tokens; a backend must report one logprob per completion token"
        )
    return torch.tensor(flat, dtype=student_lp_N.dtype, device=student_lp_N.device)


def whiten(advantage_N: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(a - mean) / (std + eps)`` over the finite entries of ``advantage_N`` ([N]); non-finite
    entries are kept as they are (the loss reports them); fewer than two finite: unchanged."""
    finite_N = torch.isfinite(advantage_N)
    if int(finite_N.sum()) < 2:
        return advantage_N
    a = advantage_N[finite_N]
    return torch.where(finite_N, (advantage_N - a.mean()) / (a.std() + eps), advantage_N)

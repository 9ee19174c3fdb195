"""The ``supervised_kd`` objective: word-level KD on fixed completions, Hinton's mix with gold CE.

    loss = alpha * CE(gold) + (1 - alpha) * T^2 * D_T(teacher || student)

summed over completion tokens, where ``D_T`` is the generalized JSD (``beta = 0``: forward
KL(teacher_T || student_T), the default) between the two next-token distributions at
temperature ``T`` (both logits divided by ``T``), and ``CE`` is the student's cross-entropy
(temperature 1) on the completion tokens themselves (the dataset's gold answers with
``source: dataset``). The ``T^2`` factor (Hinton et al. 2015) keeps the soft term's gradient
scale as ``T`` grows: the gradient of ``KL_T`` with respect to the student's logits is
``(p_s^T - p_t^T) / T``, which shrinks like ``1 / T^2`` at large ``T``; times ``T^2`` it tends
to ``((z_s - mean z_s) - (z_t - mean z_t)) / V``, matching centred logits (Caruana's logit
regression), independent of ``T``.

Vocabularies: teacher and student share a tokenizer; a model's extra, padded embedding rows (e.g.
Qwen's 151,936 vs 152,064) are never compared. Both sides' logits are sliced to the tokenizer's
``V`` real rows before any softmax, so the KL term and the CE term are over the same shared
``V`` tokens (the CE's normalizer excludes the student's padded rows too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from onpolicy.errors import ConfigError
from onpolicy.losses import generalized_jsd
from onpolicy.objectives.base import BatchSource, LossOutput, TeacherOutput, register_objective
from onpolicy.objectives.common import (
    check_temperature,
    check_unit,
    require_same,
    student_forward,
    topk_temperature_limit,
)
from onpolicy.objectives.divergence import divergence_loss
from onpolicy.teacher.types import DenseScores, TeacherScores
from onpolicy.types import Rollout


def hinton_kd(
    student_logits_N_V: torch.Tensor,
    teacher_logits_N_V: torch.Tensor,
    targets_N: torch.Tensor,
    alpha: float,
    temperature: float,
    beta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hinton's mix, summed over the ``N`` positions: ``(loss, ce_sum, soft_sum)`` with
    ``loss = alpha * ce_sum + (1 - alpha) * T^2 * soft_sum``.

    Shapes: logits ``[N, V]`` over the same ``V`` tokens (slice padded rows away first),
    ``targets_N`` int64 ``[N]``. ``ce_sum = -sum_n log softmax(student_n)[target_n]`` (temperature
    1); ``soft_sum = sum_n JSD_beta(softmax(teacher_n / T), softmax(student_n / T))`` (``beta = 0``:
    forward KL). Float32 math (float64 if given); the teacher should come detached.
    """
    dtype = torch.float64 if student_logits_N_V.dtype == torch.float64 else torch.float32
    ce_sum = torch.nn.functional.cross_entropy(
        student_logits_N_V.to(dtype), targets_N, reduction="sum"
    )
    soft_sum = generalized_jsd(
        student_logits_N_V, teacher_logits_N_V, beta=beta, temperature=temperature, reduction="sum"
    )
    loss = alpha * ce_sum + (1.0 - alpha) * temperature**2 * soft_sum
    return loss, ce_sum, soft_sum


@register_objective("supervised_kd")
@dataclass
class SupervisedKD:
    """Off-policy baseline, Hinton-style KD (see the module docstring): the teacher scores every
    position of fixed completions. ``source``: the dataset's completions (``dataset``, the gold
    text, which the CE term fits) or the teacher's samples (``teacher``; with
    ``teacher.samples=fixed``, one sample per prompt drawn once).

    ``alpha``: weight of the gold cross-entropy (0: pure KD, the default; 1: plain CE).
    ``temperature``: ``T`` of the soft term, which is multiplied by ``T^2``. ``beta``: the soft
    term's generalized-JSD coefficient (0: forward KL). ``chunked`` (the soft term from hidden
    states, never holding full logits) and a top-k teacher work with ``alpha = 0`` only.
    """

    beta: float = 0.0
    temperature: float = 1.0
    alpha: float = 0.0
    chunked: bool = False
    source: Literal["dataset", "teacher"] = "dataset"

    name: ClassVar[str] = "supervised_kd"
    needs_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_unit("beta", self.beta)
        check_unit("alpha", self.alpha)
        check_temperature(self.temperature)
        if self.source not in ("dataset", "teacher"):
            raise ConfigError(f"supervised_kd source={self.source!r}; use 'dataset' or 'teacher'")
        if self.chunked and self.alpha > 0:
            raise ConfigError(
                f"supervised_kd alpha={self.alpha} needs the student's logits for the gold CE; "
                "set chunked: false (or alpha: 0)"
            )

    def batch_source(self, step: int) -> BatchSource:
        return self.source

    def teacher_output(self) -> TeacherOutput:
        """``hidden`` with ``chunked`` (the chunked divergence), else ``logits``."""
        return "hidden" if self.chunked else "logits"

    def topk_teacher_limit(self) -> str | None:
        """A top-k teacher serves ``alpha`` 0 (the gold CE term takes full logits) at
        ``temperature`` 1 only."""
        if self.alpha > 0:
            return (
                f"alpha={self.alpha} weights a gold CE term that needs the teacher's full logits; "
                "set alpha: 0"
            )
        return topk_temperature_limit(self.temperature)

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        t2 = self.temperature**2
        if self.alpha == 0.0:  # pure KD: the shared divergence path (dense, chunked or top-k)
            out = divergence_loss(
                student, rollout, teacher_scores, self.beta, self.temperature, self.chunked,
                self.name,
            )  # fmt: skip
            soft = out.metrics["divergence_sum"]
            return LossOutput(out.loss_sum * t2, out.num_tokens, {"divergence_sum": soft})
        scores = require_same(teacher_scores, self.name)
        if not isinstance(scores, DenseScores):
            raise ConfigError(
                f"supervised_kd alpha={self.alpha} needs the teacher's full logits; use a teacher "
                "with top_k: 0 and hidden: false (or alpha: 0)"
            )
        fwd = student_forward(student, rollout, scores.vocab_size)  # sliced to the real rows
        teacher = scores.logits_N_V.to(fwd.logits_N_V.device)
        loss_sum, ce_sum, soft_sum = hinton_kd(
            fwd.logits_N_V, teacher, fwd.targets_N, self.alpha, self.temperature, self.beta
        )
        metrics = {"divergence_sum": float(soft_sum.detach()), "nll_sum": float(ce_sum.detach())}
        return LossOutput(loss_sum, int(fwd.targets_N.numel()), metrics)

"""The full-distribution divergence loss shared by ``reverse_kl``, ``gkd`` and ``supervised_kd``.

All three compute the same thing on the completions they are given, a generalized JSD between the
student's and the teacher's next-token distributions at each completion position (GKD/TRL
convention: ``beta = 0`` forward KL(teacher || student), ``beta = 1`` reverse KL(student ||
teacher)), and differ in where the completions come from (``batch_source``).
"""

from __future__ import annotations

import torch

from onpolicy.errors import ConfigError
from onpolicy.losses import (
    LMHead,
    chunked_divergence,
    chunked_topk_divergence,
    generalized_jsd,
    sparse_divergence,
)
from onpolicy.objectives.base import LossOutput
from onpolicy.objectives.common import require_same, student_forward
from onpolicy.teacher.types import DenseScores, HiddenScores, TeacherScores, TopKScores
from onpolicy.types import Rollout


def divergence_loss(
    student: torch.nn.Module,
    rollout: Rollout,
    scores: TeacherScores | None,
    beta: float,
    temperature: float,
    chunked: bool,
    name: str,
) -> LossOutput:
    """Generalized JSD summed over the rollout's completion tokens (a ``LossOutput``).

    One path per teacher variant: ``TopKScores`` -> the sparse divergence (support + tail), with
    ``chunked`` from the student's hidden states and LM head a block of positions at a time
    (``onpolicy.losses.chunked_topk``: the student's ``[N, V]`` logits never exist at once);
    ``chunked``: ``HiddenScores``, the student's and teacher's hidden states through their LM heads
    a block of positions at a time (``onpolicy.losses.chunked``); else ``DenseScores``.
    """
    scores = require_same(scores, name)
    if isinstance(scores, TopKScores):
        return _sparse_loss(student, rollout, scores, beta, temperature, chunked, name)
    if chunked and not isinstance(scores, HiddenScores):
        raise ValueError(f"objective {name!r} with chunked=True needs LocalTeacher(hidden=True)")
    if not chunked and not isinstance(scores, DenseScores):
        raise ValueError(f"objective {name!r} needs teacher logits; use LocalTeacher(hidden=False)")
    fwd = student_forward(student, rollout, scores.vocab_size, hidden=chunked)
    if isinstance(scores, HiddenScores):
        device = fwd.hidden_N_D.device
        teacher_head = LMHead(
            scores.lm_head.weight.to(device),
            None if scores.lm_head.bias is None else scores.lm_head.bias.to(device),
            scores.lm_head.logit_scale, scores.lm_head.softcap,
        )  # fmt: skip
        loss_sum = chunked_divergence(
            fwd.hidden_N_D, fwd.lm_head, scores.hidden_N_D.to(device), teacher_head,
            divergence="generalized_jsd", coef=beta, temperature=temperature, reduction="sum",
        )  # fmt: skip
    else:
        teacher = scores.logits_N_V.to(fwd.logits_N_V.device)
        loss_sum = generalized_jsd(
            fwd.logits_N_V, teacher, beta=beta, temperature=temperature, reduction="sum"
        )
    n = int(fwd.targets_N.numel())
    return LossOutput(
        loss_sum=loss_sum, num_tokens=n, metrics={"divergence_sum": float(loss_sum.detach())}
    )


def _sparse_loss(
    student: torch.nn.Module,
    rollout: Rollout,
    scores: TopKScores,
    beta: float,
    temperature: float,
    chunked: bool,
    name: str,
) -> LossOutput:
    """Generalized JSD against a top-k teacher (support + one tail bucket), summed; ``chunked``:
    from the student's hidden states and head (``chunked_topk_divergence``), else its logits."""
    if temperature != 1.0:
        raise ConfigError(
            f"objective {name!r}: temperature={temperature} needs the teacher's full logits; a "
            "top-k teacher's log-probs are at temperature 1 (set temperature: 1.0 or top_k: 0)"
        )
    fwd = student_forward(student, rollout, scores.vocab_size, hidden=chunked)
    device = fwd.targets_N.device
    ids, lps = scores.topk_ids_N_K.to(device), scores.topk_logprobs_N_K.to(device)
    tail = scores.tail_logprob_N.to(device)
    if chunked:
        loss_sum = chunked_topk_divergence(
            fwd.hidden_N_D, fwd.lm_head, ids, lps, divergence="generalized_jsd", coef=beta,
            reduction="sum", teacher_tail=tail,
        )  # fmt: skip
    else:
        loss_sum = sparse_divergence(
            fwd.logits_N_V, ids, lps, divergence="generalized_jsd", coef=beta, reduction="sum",
            teacher_tail=tail,
        )  # fmt: skip
    n = int(fwd.targets_N.numel())
    return LossOutput(loss_sum, n, {"divergence_sum": float(loss_sum.detach())})

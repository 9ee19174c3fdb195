"""Shared pieces of the objectives: the student's forward at the completion positions, checks."""

from __future__ import annotations

import random

import torch

from onpolicy.errors import ConfigError
from onpolicy.forward import CompletionForward, forward_completions
from onpolicy.teacher.types import CrossScores, TeacherScores
from onpolicy.types import Rollout

PAD_ID = 0  # any id works: padded positions are masked out of attention and never counted


def student_forward(
    student: torch.nn.Module, rollout: Rollout, vocab_size: int | None, hidden: bool = False
) -> CompletionForward:
    """The student's outputs at the rollout's packed completion positions (with gradients).

    ``vocab_size``: logits are sliced to it (the tokenizer's size; from the teacher's scores when
    there are some), None keeps the model's full output width.
    """
    batch = rollout.to_padded(PAD_ID)
    if vocab_size is None:
        vocab_size = _output_rows(student)
    return forward_completions(student, batch, vocab_size, hidden=hidden)


def _output_rows(model: torch.nn.Module) -> int:
    inner = getattr(model, "module", model)
    return int(inner.get_output_embeddings().weight.shape[0])


def require_same(scores: TeacherScores | None, objective: str) -> TeacherScores:
    """The teacher scores of a same-tokenizer objective, or a one-line error saying what to use."""
    if scores is None:
        raise ConfigError(
            f"objective {objective!r} needs teacher scores; pass teacher.score(rollout)"
        )
    if scores.mode != "same":
        raise ConfigError(
            f"objective {objective!r} needs a teacher with the student's tokenizer, but the "
            "teacher scored across tokenizers; use objective gold, uld or policy_gradient"
        )
    return scores


def require_cross(scores: TeacherScores | None, objective: str) -> CrossScores:
    """The teacher scores of a cross-tokenizer objective (from a teacher in ``cross`` mode)."""
    if not isinstance(scores, CrossScores):
        raise ConfigError(
            f"objective {objective!r} needs cross-tokenizer teacher scores; set teacher.mode=cross "
            "(or auto with a teacher whose tokenizer differs)"
        )
    return scores


def on_policy_share(seed: int, step: int, lmbda: float) -> bool:
    """True when optimizer step ``step`` is on-policy: a draw from an RNG seeded by (seed, step), so
    every process (and a resumed run) decides the same without communicating."""
    return random.Random(f"{seed}:{step}").random() < lmbda


def check_unit(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    """A ``ConfigError`` when ``value`` is outside ``[low, high]``."""
    if not low <= value <= high:
        raise ConfigError(f"objective option {name}={value} must be in [{low}, {high}]")


def check_temperature(value: float) -> None:
    if value <= 0:
        raise ConfigError(f"objective option temperature={value} must be > 0")


def topk_temperature_limit(
    temperature: float, teacher_temperature: float | None = None
) -> str | None:
    """Why a top-k teacher (log-probabilities at temperature 1) cannot serve ``temperature`` /
    ``teacher_temperature`` (``None`` when both are 1, or the latter unset): rescaling needs the
    teacher's full distribution."""
    if temperature == 1.0 and teacher_temperature in (None, 1.0):
        return None
    if teacher_temperature is None:
        return (
            f"temperature={temperature} needs the teacher's full distribution; set temperature: 1.0"
        )
    return (
        f"temperature={temperature}, teacher_temperature={teacher_temperature} need the teacher's "
        "full distribution; set temperature: 1.0 and teacher_temperature: null"
    )

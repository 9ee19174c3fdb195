"""The objective interface: what one training step optimizes, named and registered.

The trainer's loop (and a user's own RL-style loop) reads top to bottom:

    source = objective.batch_source(step)                 # decided once per optimizer step
    rollout = <student rollout | teacher samples | dataset completions>   (a ``Rollout`` each)
    scores = teacher.score(rollout) if objective.needs_teacher else None
    out = objective.loss(student, rollout, scores)         # LossOutput: a SUM over counted tokens
    (out.loss_sum / global_count_of_counted_tokens).backward()  # normalized globally, see losses
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

BatchSource = Literal["student", "teacher", "dataset"]
"""Where a step's completions come from: the student's own rollouts (on-policy), samples the teacher
generated (sequence-level KD / SFT baseline), or the dataset's fixed completions (supervised KD)."""


@dataclass
class LossOutput:
    """One micro-batch's loss.

    Attributes:
        loss_sum: scalar tensor with grad: the loss SUMMED over counted completion tokens (never a
            mean: the trainer divides by the global count across micro-batches and processes).
        num_tokens: number of counted completion tokens in this micro-batch.
        metrics: plain floats for logging (sums or means, named by what they are).
    """

    loss_sum: torch.Tensor
    num_tokens: int
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    """A named training objective (``objective.name`` in config)."""

    name: str
    needs_teacher: bool

    def batch_source(self, step: int) -> BatchSource:
        """Where optimizer step ``step``'s completions come from; must be the same on every process
        (e.g. GKD's lambda decided by an RNG seeded with (seed, step))."""
        ...

    def loss(self, student: torch.nn.Module, rollout: Any, teacher_scores: Any) -> LossOutput:
        """The loss of ``student`` on ``rollout`` (a ``Rollout``) given the teacher's scores
        (``TeacherScores`` or None when ``needs_teacher`` is False)."""
        ...


TeacherOutput = Literal["logits", "hidden", "token"]
"""What an objective needs from a same-tokenizer teacher: its logits at the completion positions,
or its final hidden states + LM head (a chunked divergence projects them a block at a time, and
the teacher then skips its own full LM-head pass), or only the log-probability of each completion
token (``token``: the sampled-token objective; a served teacher then asks for no top-k).
The ``TeacherScores`` variant each gets (``onpolicy.teacher.types``): ``logits`` -> ``DenseScores``
(``TopKScores`` from a top-k teacher), ``hidden`` -> ``HiddenScores``, ``token`` -> any
same-tokenizer variant (``TokenScores`` from a served teacher); ``CrossScores`` whenever the
tokenizers differ."""


@runtime_checkable
class DeclaresTeacherOutput(Protocol):
    """An objective that says which ``TeacherOutput`` it needs (the others need ``logits``)."""

    def teacher_output(self) -> TeacherOutput: ...


def teacher_output(objective: Any) -> TeacherOutput:
    """The ``TeacherOutput`` ``objective`` declares (``logits`` when it declares none): the
    trainer asks this instead of reading objective options."""
    return objective.teacher_output() if isinstance(objective, DeclaresTeacherOutput) else "logits"


@runtime_checkable
class DeclaresTopKLimit(Protocol):
    """An objective with options a top-k teacher cannot serve (the others need nothing more)."""

    def topk_teacher_limit(self) -> str | None: ...


def topk_teacher_limit(objective: Any) -> str | None:
    """None when top-k log-probabilities at temperature 1 (a vLLM teacher, cached scores) are
    enough for ``objective``, else the objective's one-line reason ending in the option to set
    (``...; set alpha: 0``); None when it declares nothing. The teacher checks
    (``onpolicy.teacher.backends``, ``onpolicy.scores.cached``) ask this, not objective options."""
    if isinstance(objective, DeclaresTopKLimit):
        return objective.topk_teacher_limit()
    return None


ObjectiveFactory = Callable[..., Objective]
OBJECTIVES: dict[str, ObjectiveFactory] = {}


def register_objective(name: str) -> Callable[[ObjectiveFactory], ObjectiveFactory]:
    """Register an objective factory under ``name``; its keyword arguments are the config
    block's keys."""

    def wrap(factory: ObjectiveFactory) -> ObjectiveFactory:
        OBJECTIVES[name] = factory
        return factory

    return wrap


def make_objective(
    name: str, params: Mapping[str, Any] | None = None, seed: int | None = None
) -> Objective:
    """The one objective factory (``onpolicy.api.make_objective``, the trainer's
    ``build_objective``): the objective registered as ``name`` built with ``params``; ``seed``
    goes to a factory that takes one when ``params`` does not set it (GKD's per-step coin).
    Unknown names and bad params are one-line ``ConfigError``s."""
    import onpolicy.objectives  # noqa: F401  (registers the built-ins)
    from onpolicy.errors import ConfigError

    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; use one of {sorted(OBJECTIVES)}")
    factory = OBJECTIVES[name]
    kwargs = dict(params or {})
    if seed is not None and "seed" in inspect.signature(factory).parameters:
        kwargs.setdefault("seed", seed)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"objective {name!r}: bad params {sorted(kwargs)}: {exc}") from exc

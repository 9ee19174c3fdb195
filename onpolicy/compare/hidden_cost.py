"""The estimated FLOPs of a method's hidden-state term (``hidden`` block), added to its plan.

A hidden term costs, per optimizer step and row, on top of its objective (``budget.py``):

- the trained projection: ``6 P`` per compared position (forward and backward of ``P`` =
  maps x ``D_s`` x ``D_t`` parameters). The same tokenizer compares every completion position:
  ``C``. Across tokenizers only the ends of aligned spans are compared: ``C x r``, ``r`` the
  aligned spans per student token (``Sizes.span_ends_per_token``, measured by
  ``span_ends_per_token`` on the training prompts' reference completions with the run's real
  alignment; 1 for a char-level teacher, about 0.45 for a char-level student of a BPE teacher);
- the teacher's scoring forward ``2 N_t (P_t + q C)`` (``q``: ``Sizes.teacher_tokens_per_token``)
  when the objective alone needs no teacher (``sft`` + hidden: the wrapper scores every batch for
  the teacher's states).

The student's and the teacher's own forwards are the objective's: the term reads their states.
What a run spent is recorded by the trainer the same way, with the exact count of compared
positions (``ComputeBudget.projection_flops``, from the objective's ``PROJECTION_FLOPS`` metric).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onpolicy.compare.budget import Sizes, StepCost
from onpolicy.types import Prompt

MAX_REFERENCES = 400  # reference completions enough for a stable spans-per-token ratio


def projection_params(config: Any) -> int:
    """``P``: the projection's parameters for a trainer ``config`` with a hidden term (0 without
    one, or without maps); reads the two models' ``config.json`` and tokenizers only."""
    from onpolicy.hidden.build import enabled, hidden_plan

    if not enabled(config):
        return 0
    plan = hidden_plan(config)
    return plan.num_maps * plan.student_dim * plan.teacher_dim


def projection_step_flops(config: Any, sizes: Sizes) -> float:
    """The projection's estimated FLOPs per optimizer step: ``6 P`` x compared positions
    (``C`` per row, times ``sizes.span_ends_per_token`` across tokenizers) x rows."""
    from onpolicy.hidden.build import enabled, hidden_plan

    if not enabled(config):
        return 0.0
    per_row = float(sizes.completion_tokens)
    if hidden_plan(config).cross:
        per_row *= sizes.span_ends_per_token
    return 6.0 * projection_params(config) * per_row * sizes.rows_per_step


def span_ends_per_token(student_tokenizer: Any, teacher_tokenizer: Any,
                        prompts: Sequence[Prompt]) -> float:  # fmt: skip
    """``r``: aligned spans per student token over the prompts' reference completions (the first
    ``MAX_REFERENCES`` with one), aligned as the trainer aligns a completion
    (``alignment.doctor.coverage``), each ending with the student's stop token (one token, one
    span of its own, as in a completion that ended); 1.0 (every token, the upper bound) when no
    prompt has a reference."""
    from alignment.doctor import coverage

    replies = [[{"role": "assistant", "content": p.reference}] for p in prompts if p.reference]
    replies = replies[:MAX_REFERENCES]
    _, student_per_span, _, spans = coverage(replies, student_tokenizer, teacher_tokenizer)
    if not replies:
        return 1.0
    return (spans + len(replies)) / (student_per_span * spans + len(replies))


def with_hidden_cost(cost: StepCost, config: Any, objective: Any, sizes: Sizes) -> StepCost:
    """``cost`` plus the hidden term's FLOPs per step (the module docstring); ``cost`` itself
    when ``config`` has no hidden term."""
    from onpolicy.hidden.build import enabled

    if not enabled(config):
        return cost
    extra = projection_step_flops(config, sizes)
    if not objective.needs_teacher:  # the teacher reads its own tokens: P_t + q C per row
        extra += 2.0 * sizes.teacher_params * sizes.teacher_row * sizes.rows_per_step
    per_step = cost.per_step
    return StepCost(cost.once, lambda step: per_step(step) + extra)

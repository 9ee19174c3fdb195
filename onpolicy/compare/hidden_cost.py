"""The estimated FLOPs of a method's hidden-state term (``hidden`` block), added to its plan.

A hidden term costs, per optimizer step and row, on top of its objective (``budget.py``):

- the trained projection: ``6 P`` per compared position (forward and backward of ``P`` =
  maps x ``D_s`` x ``D_t`` parameters), counted at every completion position ``C`` (exact for the
  same tokenizer; an upper bound across tokenizers, where only the ends of aligned spans are
  compared);
- the teacher's scoring forward ``2 N_t (P_t + C)`` when the objective alone needs no teacher
  (``sft`` + hidden: the wrapper scores every batch for the teacher's states).

The student's and the teacher's own forwards are the objective's: the term reads their states.
What a run spent is recorded by the trainer the same way, with the exact count of compared
positions (``ComputeBudget.projection_flops``, from the objective's ``PROJECTION_FLOPS`` metric).
"""

from __future__ import annotations

from typing import Any

from onpolicy.compare.budget import Sizes, StepCost


def projection_params(config: Any) -> int:
    """``P``: the projection's parameters for a trainer ``config`` with a hidden term (0 without
    one, or without maps); reads the two models' ``config.json`` and tokenizers only."""
    from onpolicy.hidden.build import enabled, hidden_plan

    if not enabled(config):
        return 0
    plan = hidden_plan(config)
    return plan.num_maps * plan.student_dim * plan.teacher_dim


def with_hidden_cost(cost: StepCost, config: Any, objective: Any, sizes: Sizes) -> StepCost:
    """``cost`` plus the hidden term's FLOPs per step (the module docstring); ``cost`` itself
    when ``config`` has no hidden term."""
    from onpolicy.hidden.build import enabled

    if not enabled(config):
        return cost
    rows, completion = sizes.rows_per_step, sizes.completion_tokens
    extra = 6.0 * projection_params(config) * completion * rows
    if not objective.needs_teacher:
        extra += 2.0 * sizes.teacher_params * (sizes.teacher_prompt_tokens + completion) * rows
    per_step = cost.per_step
    return StepCost(cost.once, lambda step: per_step(step) + extra)

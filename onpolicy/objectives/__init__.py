"""Training objectives, registered by name (``objective.name`` in config); importing this package
registers the built-ins. See ``onpolicy.objectives.base`` for the interface."""

from onpolicy.objectives import (
    gkd,
    gold,
    next_byte,
    policy_gradient,
    reverse_kl,
    sft,
    supervised_kd,
    uld,
)
from onpolicy.objectives.base import OBJECTIVES, LossOutput, Objective, register_objective

__all__ = [
    "OBJECTIVES",
    "LossOutput",
    "Objective",
    "gkd",
    "gold",
    "next_byte",
    "policy_gradient",
    "register_objective",
    "reverse_kl",
    "sft",
    "supervised_kd",
    "uld",
]

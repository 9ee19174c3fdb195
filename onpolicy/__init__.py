"""onpolicy: on-policy and cross-tokenizer distillation of language models.

The main names are importable from the package; modules that pull torch/transformers load on
first use (``import onpolicy`` stays cheap)::

    from onpolicy import (LocalTeacher, SamplingParams, Prompt, load_model, load_tokenizer,
                          make_backend, make_objective, score, loss, step)
    from onpolicy.api import rollout

(``rollout`` is not re-exported here: ``onpolicy.rollout`` is the backends' subpackage.)

Layout. The engine: ``types`` (the contract), ``config`` + ``config_parse`` + ``config_checks``
(a run config, validated before any model loads), ``data`` (the one prompt loader), ``chat``
(prompt rendering, on ``alignment.tokens.chat``), ``models`` (loading, LoRA, and the one place
model paths are checked and resolved: folders, ``.gguf``, ``tiny:``, ``offline:``), ``forward``,
``losses`` (token-level divergences, sampled-token log-probs, token normalization: the one home
of the per-token math, on ``alignment.divergence``), ``objectives`` (one factory,
``objectives.base.make_objective``), ``teacher`` (its scores as typed variants,
``teacher.types``), ``hidden`` (hidden-state distillation), ``rollout``, ``trainer`` (setup,
loop, evaluation, checkpoints), ``api``, ``cli`` and ``doctor`` (``alignment.doctor``'s report
over prompts read by ``data``); the offline teacher commands ``generate`` and ``scores`` (their
shared shape in ``jobs``). The harness it drives: ``tasks``, ``compare``, ``evidence``,
``scaling``, ``init_student``, and the model builders ``tiny`` and ``offline`` (reached from the
engine only through model paths; ``tests/onpolicy/test_engine_apart.py`` holds it to that).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # the contract
    "Prompt": "onpolicy.types",
    "SamplingParams": "onpolicy.types",
    "Rollout": "onpolicy.types",
    "PaddedBatch": "onpolicy.types",
    "IGNORE_INDEX": "onpolicy.types",
    "TeacherScores": "onpolicy.teacher.types",
    "LossOutput": "onpolicy.objectives.base",
    # the Python API
    "score": "onpolicy.api",
    "loss": "onpolicy.api",
    "step": "onpolicy.api",
    "distillation_reward": "onpolicy.api",
    "completion_rollout": "onpolicy.api",
    "make_objective": "onpolicy.api",
    "make_backend": "onpolicy.rollout.base",
    "LocalTeacher": "onpolicy.teacher.local",
    "VLLMTeacher": "onpolicy.teacher.vllm_teacher",
    "TeacherSet": "onpolicy.teacher.routing",
    "make_teacher": "onpolicy.api",
    # models
    "load_model": "onpolicy.models",
    "load_tokenizer": "onpolicy.models",
    "LoraSpec": "onpolicy.models",
    "apply_lora": "onpolicy.models",
    "export_merged": "onpolicy.models",
    "save_student": "onpolicy.models",
    "render_prompt": "onpolicy.chat",
    "tiny_model_dir": "onpolicy.tiny",
}

__all__ = sorted(_LAZY)

if os.environ.get("ONPOLICY_QUIET") == "1":  # a worker of the quieted CLI (``onpolicy.quiet``)
    from onpolicy.quiet import apply_from_environment

    apply_from_environment()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onpolicy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

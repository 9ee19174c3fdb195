"""From a ``Config``'s ``hidden`` block to the run's pieces, and its up-front checks.

``check_hidden_config`` runs with the config validation (no files read); ``hidden_plan`` reads the
two models' ``config.json`` and tokenizers, before any weights load, and gives the layer pairs and
the projection's shape; ``wrap_objective`` makes the trainer's ``WithHidden``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onpolicy.config import Config, HiddenConfig
from onpolicy.errors import ConfigError
from onpolicy.hidden.layers import LayerPairs, layer_map, model_shape
from onpolicy.hidden.projection import HiddenProjection


@dataclass(frozen=True)
class HiddenPlan:
    """The hidden term of a run: layer pairs and the projection's shape.

    Attributes:
        pairs: ``(student, teacher)`` hidden-state indices.
        student_dim, teacher_dim: the two hidden widths.
        num_maps: linear maps to train (one per pair), 0 for none (equal widths).
        cross: the tokenizers differ: states are compared at aligned span ends
            (``onpolicy.hidden.cross``), else at every completion position.
    """

    pairs: LayerPairs
    student_dim: int
    teacher_dim: int
    num_maps: int
    cross: bool = False


def enabled(config: Config) -> bool:
    return config.hidden.weight > 0


def cross_objective(config: Config) -> bool:
    """Whether the configured objective is a cross-tokenizer one (``gold``, ``uld``,
    ``next_byte``: an ``AnchoredCrossObjective``)."""
    from onpolicy.objectives.base import OBJECTIVES
    from onpolicy.objectives.cross import AnchoredCrossObjective

    factory = OBJECTIVES.get(config.objective.name)
    return isinstance(factory, type) and issubclass(factory, AnchoredCrossObjective)


def check_hidden_config(config: Config) -> None:
    """One-line ``ConfigError``s for a ``hidden`` block that cannot work (nothing is read)."""
    h: HiddenConfig = config.hidden
    if h.weight < 0:
        raise ConfigError(f"hidden.weight={h.weight} must be >= 0 (0 turns the term off)")
    if not enabled(config):
        return
    if cross_objective(config) and config.teacher.mode in ("same", "self"):
        raise ConfigError(
            f"hidden-state distillation with the cross-tokenizer objective "
            f"{config.objective.name!r} compares states at aligned span ends and needs a "
            f"cross-tokenizer teacher, but teacher.mode={config.teacher.mode}; set teacher.mode="
            "cross (or auto)"
        )
    if config.teachers:
        raise ConfigError(
            "hidden-state distillation takes one teacher; use teacher: (not teachers:) or "
            "hidden.weight=0"
        )
    if config.teacher.backend != "local":
        raise ConfigError(
            f"hidden-state distillation needs the teacher's hidden states; teacher.backend="
            f"{config.teacher.backend!r} returns log-probabilities only: use backend local or "
            "hidden.weight=0"
        )
    if config.teacher.mode != "self" and config.teacher.path is None:
        raise ConfigError("hidden.weight > 0 needs a teacher: set teacher.path")
    for pair in h.layer_map:
        if len(pair) != 2 or min(pair) < 0:
            raise ConfigError(
                f"hidden.layer_map entry {pair} is not a [student, teacher] pair of layer "
                "indices >= 0; write e.g. [[1, 2], [2, 4]]"
            )


def hidden_plan(config: Config) -> HiddenPlan:
    """The layer pairs and projection shape, from the models' ``config.json`` (checked against
    the depths); the tokenizers are compared too (``_is_cross``: which variant runs, and a
    one-line error for a mismatch, before any weights load). Call when ``enabled(config)``."""
    from onpolicy.models import resolve_model_path

    student_dir = resolve_model_path(config.student.path)
    teacher_dir = student_dir if config.teacher.mode == "self" else None
    cross = False
    if teacher_dir is None:
        teacher_dir = resolve_model_path(config.teacher.path or "")
        cross = _is_cross(config, student_dir, teacher_dir)
    s_layers, s_dim = model_shape(_config_json(student_dir, config.student.gguf_file))
    t_layers, t_dim = model_shape(_config_json(teacher_dir, config.teacher.gguf_file))
    pairs = layer_map(config.hidden.layer_map, s_layers, t_layers)
    mode = config.hidden.projection
    if mode == "none" and s_dim != t_dim:
        raise ConfigError(
            f"hidden.projection=none but the student's hidden width is {s_dim} and the "
            f"teacher's {t_dim}; use projection: auto or linear"
        )
    linear = mode == "linear" or (mode == "auto" and s_dim != t_dim)
    return HiddenPlan(pairs, s_dim, t_dim, len(pairs) if linear else 0, cross)


def make_projection(plan: HiddenPlan, config: Config) -> HiddenProjection:
    """The untrained ``HiddenProjection`` of ``plan`` (float32, initialized per
    ``hidden.projection_init``; the caller moves it to the device)."""
    return HiddenProjection(
        plan.student_dim, plan.teacher_dim, plan.num_maps, config.hidden.projection_init
    )


def wrap_objective(objective: Any, plan: HiddenPlan, config: Config, projection: Any) -> Any:
    """``objective`` with the hidden term (``WithHidden``; ``WithCrossHidden`` across
    tokenizers)."""
    from onpolicy.hidden.cross import WithCrossHidden
    from onpolicy.hidden.objective import WithHidden

    h = config.hidden
    wrapper = WithCrossHidden if plan.cross else WithHidden
    return wrapper(objective, plan.pairs, h.weight, h.loss, projection)


def _config_json(folder: str, gguf_file: str | None) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if gguf_file or not path.is_file():
        raise ConfigError(
            f"hidden-state distillation reads the model's config.json, which {folder!r} lacks "
            "(a .gguf model); convert it to a Hugging Face folder or set hidden.weight=0"
        )
    return json.loads(path.read_text())


def _is_cross(config: Config, student_dir: str, teacher_dir: str) -> bool:
    """Whether the hidden term runs across tokenizers (states at aligned span ends): the teacher
    scores in cross mode (``teacher.mode: cross``, or ``auto`` with a tokenizer that differs).
    A ``same`` teacher with another tokenizer, or a cross objective with the same tokenizer under
    ``auto``, is a one-line error here, before any weights load."""
    from alignment import same_tokenizer
    from onpolicy.models import load_tokenizer

    student = load_tokenizer(student_dir, config.student.gguf_file)
    teacher = load_tokenizer(teacher_dir, config.teacher.gguf_file)
    same = same_tokenizer(student, teacher)
    mode = config.teacher.mode
    if mode == "same" and not same:
        raise ConfigError(
            f"hidden-state distillation with teacher.mode=same needs the same tokenizer, but the "
            f"teacher {config.teacher.path!r} tokenizes differently from the student "
            f"{config.student.path!r}; set teacher.mode=cross (states compared at aligned span "
            "ends) or hidden.weight=0"
        )
    cross = mode == "cross" or (mode == "auto" and not same)
    if not cross and cross_objective(config):
        raise ConfigError(
            f"objective {config.objective.name!r} is cross-tokenizer but the teacher shares the "
            "student's tokenizer; set teacher.mode=cross or use a same-tokenizer objective"
        )
    if cross and not cross_objective(config) and config.objective.name != "sft":
        raise ConfigError(
            f"cross-tokenizer hidden-state distillation runs with gold, uld, next_byte (on the "
            f"student's samples) or sft (on the teacher's), not {config.objective.name!r}; "
            "change the objective or set hidden.weight=0"
        )
    return cross

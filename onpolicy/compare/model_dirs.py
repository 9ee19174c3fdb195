"""The compare harness's models: the task's own (built or found in the cache: ``arithmetic``,
``long_arithmetic``) or the configured folders (``kind: paths``; ``tiny:``/``offline:`` specs
resolved by ``onpolicy.models``), as the three folders every job loads from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onpolicy.compare.config import CompareConfig
from onpolicy.errors import ConfigError


@dataclass
class ModelDirs:
    """Folders of the teacher, the same-tokenizer student and the other-tokenizer student."""

    teacher: str
    student: str | None
    cross_student: str | None


def _resolve_path(spec: dict[str, Any], key: str) -> str | None:
    """``models.<key>`` as a folder (``onpolicy.models``: checked, then ``tiny:``, ``offline:``
    and ``~`` resolved); None when not set."""
    from onpolicy.models import check_model_path, resolve_model_path

    value = spec.get(key)
    if value is None:
        return None
    check_model_path(f"models.{key}", str(value))
    return resolve_model_path(str(value))


def resolve_models(cfg: CompareConfig, log: Callable[[str], None] = print) -> ModelDirs:
    """Build (or find cached) the task's models, or resolve the configured folders."""
    spec = dict(cfg.models)
    kind = spec.pop("kind")
    if kind == "arithmetic":
        from onpolicy.tasks.arith_models import (
            ArithmeticModelsConfig,
            ModelSpec,
            arithmetic_models,
        )

        digits = cfg.task.get("digits", 3)
        cut = spec.pop("cut_layers", None), bool(spec.pop("cut_fresh", False))
        bpe_teacher = spec.pop("teacher_tokenizer", "char") == "bpe"
        for key in ("teacher", "student"):  # YAML gives {layers, heads, ffn}
            if isinstance(spec.get(key), dict):
                spec[key] = ModelSpec(**spec[key])
        kinds = {m.student for m in cfg.methods} | ({"cross"} if bpe_teacher else set())
        which = (
            "teacher",
            *(
                name
                for kind, name in (("same", "student"), ("cross", "cross_student"))
                if kind in kinds
            ),
        )
        models = arithmetic_models(
            ArithmeticModelsConfig(digits=digits, **spec), log=log, which=which
        )
        log(
            f"[compare] arithmetic models at {models.teacher_dir.parent} "
            f"(held-out exact match when built: {models.scores})"
        )
        student_dir = models.student_dir
        if cut[0] is not None:  # the student is cut from the teacher (or that shape, fresh)
            from onpolicy.tasks.cut_students import cut_student_dir

            student_dir = cut_student_dir(models.teacher_dir, cut[0], fresh=cut[1], log=log)
        if bpe_teacher:  # the same-tokenizer reference of the cross pair (tasks/bpe_teacher.py)
            from onpolicy.tasks.bpe_teacher import bpe_teacher_dir

            teacher = bpe_teacher_dir(
                ArithmeticModelsConfig(digits=digits, **spec), models.cross_student_dir, log=log
            )
            log(f"[compare] teacher: the BPE teacher at {teacher}; student: the BPE student")
            return ModelDirs(str(teacher), str(models.cross_student_dir), None)
        return ModelDirs(str(models.teacher_dir), str(student_dir), str(models.cross_student_dir))
    if kind == "long_arithmetic":
        from onpolicy.tasks.long_models import LongModelsConfig, long_models, teacher_spec

        task = {k: cfg.task[k] for k in ("digits", "min_digits", "variants") if k in cfg.task}
        if "teacher_steps" in spec:
            task["teacher_steps"] = int(spec["teacher_steps"])
        task["teacher"] = teacher_spec(str(spec.get("teacher", "base")))
        built = long_models(LongModelsConfig(**task), log=log)
        student = spec.get("student", "medium")
        log(
            f"[compare] long_arithmetic models at {built.teacher_dir.parent} (teacher valid exact "
            f"match when built: {built.teacher_score:.3f}; params: {built.params})"
        )
        return ModelDirs(str(built.teacher_dir), str(built.student_dirs[student]), None)
    if "teacher" not in spec:
        raise ConfigError("models.kind=paths needs a 'teacher' folder")
    return ModelDirs(
        _resolve_path(spec, "teacher"),
        _resolve_path(spec, "student"),
        _resolve_path(spec, "cross_student"),
    )

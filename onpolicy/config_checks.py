"""Validation of a ``Config`` before any model loads: ranges, files, registries, objective options.

Every problem raises ``ConfigError`` with one line naming the key, the bad value and the fix.
"""

from __future__ import annotations

import contextlib
import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from onpolicy.errors import ConfigError, check_at_least
from onpolicy.metrics import check_metric
from onpolicy.models import (
    check_model_path,
    parse_tiny_spec,
    resolve_model_path,
    saved_weights_file,
)
from onpolicy.objectives.base import make_objective

if TYPE_CHECKING:  # annotations only: config imports this module, never the other way
    from onpolicy.config import Config, ObjectiveConfig, TeacherConfig
    from onpolicy.objectives.base import Objective

__all__ = ["parse_tiny_spec", "resolve_model_path", "resolve_path", "validate"]
_check_model_path = check_model_path  # the old private name (branches written before the move)


def validate(config: Config, base_dir: Path | None = None) -> None:
    """Raise ``ConfigError`` on the first problem; ``base_dir`` resolves relative data paths."""
    c = config
    _check_ranges(c)
    check_model_path("student.path", c.student.path)
    if c.student.init_from is not None:
        saved_weights_file(c.student.init_from)  # a one-line error before any model loads
    for key, t in _teacher_blocks(c):
        if t.mode == "self":
            if not c.lora.enabled:
                raise ConfigError(
                    f"{key}.mode=self needs lora.enabled=true (teacher = base, adapters off)"
                )
        elif t.path is not None:
            check_model_path(f"{key}.path", t.path)
    for key, value in (("data.path", c.data.path), ("data.eval_path", c.data.eval_path)):
        if value is not None and not resolve_path(value, base_dir).exists():
            raise ConfigError(
                f"{key}={value!r} does not exist; give a JSON/JSONL/parquet file "
                "or a save_to_disk folder"
            )
    check_metric(c.eval.metric, base_dir)
    if c.reward.function is not None:
        from onpolicy.rewards import check_reward_config

        check_reward_config(c, base_dir)
    _check_registered("rollout.backend", c.rollout.backend, _backend_names())
    _check_registered("objective.name", c.objective.name, _objective_names())
    _check_objective_params(c.objective)
    from onpolicy.hidden.build import check_hidden_config

    check_hidden_config(c)
    # built once by the one factory: bad option values fail here, before any model loads
    objective = make_objective(c.objective.name, c.objective.params, c.train.seed)
    _check_teachers(c, objective)
    if c.teachers and any(t.scores for t in (c.teacher, *c.teachers.values())):
        raise ConfigError(
            "teacher scores (onpolicy score) serve a single teacher: block, not a teachers: map; "
            "drop the scores key or train with one teacher"
        )
    if c.teachers:
        return
    if c.teacher.scores is not None:
        from onpolicy.scores.cached import check_cached_scores

        check_cached_scores(c, base_dir)
    elif c.teacher.path is None and c.teacher.mode != "self" and _needs_teacher(objective, c):
        raise ConfigError(
            f"teacher.path is missing and objective {c.objective.name!r} needs a teacher; set it "
            "to a model folder or tiny:<size> (gold-data SFT without a teacher: objective sft "
            "with params {source: dataset})"
        )


def _teacher_blocks(c: Config) -> list[tuple[str, TeacherConfig]]:
    """``(config key, block)`` of each teacher: ``teachers.<name>``, else ``teacher``."""
    if c.teachers:
        return [(f"teachers.{name}", t) for name, t in c.teachers.items()]
    return [("teacher", c.teacher)]


def _check_teachers(c: Config, objective: Objective) -> None:
    """Each teacher's backend against the objective; the ``teachers:`` map's own rules."""
    from onpolicy.config import TeacherConfig
    from onpolicy.objectives.base import teacher_output
    from onpolicy.teacher.backends import check_backend

    output = teacher_output(objective)
    if c.teachers:
        if c.teacher != TeacherConfig():
            raise ConfigError(
                "both teacher: and teachers: are set; put every teacher under teachers: "
                "(name: {path: ..., weight: ...}) and drop the teacher: block"
            )
        if len({t.samples for t in c.teachers.values()}) > 1:
            raise ConfigError(
                "teachers: disagree on samples (fresh / fixed); set the same value in each"
            )
        samples = any(objective.batch_source(s) == "teacher" for s in range(c.train.steps))
        if samples and any(t.mode == "self" for t in c.teachers.values()):
            raise ConfigError(
                f"objective {c.objective.name!r} samples the teachers, and a mode: self teacher "
                "cannot sample; give it a path or drop it"
            )
    for key, t in _teacher_blocks(c):
        if c.teachers and t.path is None and t.mode != "self":
            raise ConfigError(f"{key}.path is missing; set it to a model folder or tiny:<size>")
        if t.weight <= 0:
            raise ConfigError(f"{key}.weight={t.weight} must be > 0")
        if t.path is not None or t.backend != "local":
            check_backend(key, t, output, objective)


def _needs_teacher(objective: Objective, c: Config) -> bool:
    """Whether the objective scores with the teacher or samples it in some step."""
    if objective.needs_teacher:
        return True
    return any(objective.batch_source(s) == "teacher" for s in range(c.train.steps))


def _check_objective_params(obj: ObjectiveConfig) -> None:
    """Unknown ``objective.params`` keys are caught here, not as a TypeError deep in a run."""
    import inspect

    from onpolicy.objectives.base import OBJECTIVES

    factory = OBJECTIVES.get(obj.name)
    if factory is None:
        return
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in obj.params:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"objective.params.{key} is not an option of {obj.name!r}; {hint}options: {names}"
            )


def _check_ranges(c: Config) -> None:
    positive = {
        "student.max_length": c.student.max_length,
        "rollout.max_new_tokens": c.rollout.max_new_tokens,
        "rollout.n": c.rollout.n,
        "train.steps": c.train.steps,
        "train.micro_batch_size": c.train.micro_batch_size,
        "train.grad_accum": c.train.grad_accum,
        "train.max_nonfinite": c.train.max_nonfinite,
        "lora.r": c.lora.r,
        "eval.batch_size": c.eval.batch_size,
        "logging.every": c.logging.every,
        "train.keep_checkpoints": c.train.keep_checkpoints,
    }
    check_at_least(positive, 1)
    non_negative = {
        "rollout.top_k": c.rollout.top_k,
        "teacher.top_k": c.teacher.top_k,
        "optim.warmup_steps": c.optim.warmup_steps,
        "train.checkpoint_every": c.train.checkpoint_every,
        "eval.every": c.eval.every,
        "eval.num_prompts": c.eval.num_prompts,
        "data.eval_size": c.data.eval_size,
        "optim.weight_decay": c.optim.weight_decay,
        "rollout.temperature": c.rollout.temperature,
        "lora.dropout": c.lora.dropout,
    }
    check_at_least(non_negative, 0)
    if not 0 < c.optim.lr < 1:
        raise ConfigError(
            f"optim.lr={c.optim.lr} is out of range; use a value in (0, 1), e.g. 1e-4"
        )
    if not 0 < c.rollout.top_p <= 1:
        raise ConfigError(f"rollout.top_p={c.rollout.top_p} must be in (0, 1]")
    if c.optim.grad_clip is not None and c.optim.grad_clip <= 0:
        raise ConfigError(f"optim.grad_clip={c.optim.grad_clip} must be > 0 or null (off)")
    if len(c.optim.betas) != 2 or not all(0 <= b < 1 for b in c.optim.betas):
        raise ConfigError(f"optim.betas={c.optim.betas} must be two numbers in [0, 1)")
    if c.rollout.vllm and c.rollout.backend == "hf":
        raise ConfigError(
            "rollout.vllm settings are set but rollout.backend=hf; set backend=vllm "
            "(or vllm-server) or drop the rollout.vllm block"
        )
    if c.rollout.max_new_tokens >= c.student.max_length:
        raise ConfigError(
            f"rollout.max_new_tokens={c.rollout.max_new_tokens} leaves no room for the prompt in "
            f"student.max_length={c.student.max_length}; raise max_length or lower max_new_tokens"
        )
    if c.lora.enabled and not c.lora.target_modules:
        raise ConfigError("lora.target_modules is empty; name modules such as [q_proj, v_proj]")


def resolve_path(value: str, base_dir: Path | None) -> Path:
    """``value`` if it exists (relative to the working dir), else relative to ``base_dir``."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists() or base_dir is None:
        return p
    return base_dir / p


def _check_registered(key: str, value: str, known: list[str]) -> None:
    if value in known:
        return
    close = difflib.get_close_matches(value, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"{key}={value!r} is not registered; {hint}use one of {sorted(known)}")


def _backend_names() -> list[str]:
    from onpolicy.rollout.base import ROLLOUT_BACKENDS

    return sorted({*ROLLOUT_BACKENDS, "hf", "vllm", "vllm-server"})


def _objective_names() -> list[str]:
    from onpolicy.objectives.base import OBJECTIVES

    with contextlib.suppress(ImportError):  # the package's __init__ registers the built-ins
        import onpolicy.objectives  # noqa: F401
    builtin = ["reverse_kl", "gkd", "sft", "supervised_kd", "policy_gradient", "gold", "uld"]
    return sorted({*OBJECTIVES, *builtin})

"""The methods the harness compares, and how each becomes a run of the trainer.

Every method starts from the same student folder and runs through ``onpolicy.trainer.train`` with
the same optimizer (AdamW, constant learning rate, gradient clipping), the same number of
optimizer steps and prompts per step, and the same seed-driven prompt order; only where
completions come from and what loss they get differs (the objective). Teacher-sampled batches use
one fixed teacher sample per prompt (``teacher.samples=fixed``: sequence-level KD's dataset). The
trainer counts the compute each method spends (``TrainResult.budget``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onpolicy.config import Config, from_dict
from onpolicy.errors import ConfigError, check_known_keys
from onpolicy.trainer.step_metrics import ComputeBudget

Budget = ComputeBudget  # the compute a method spent (token positions, seconds; ``flops()``)

StudentKind = Literal["same", "cross"]


@dataclass(frozen=True)
class MethodSpec:
    """One row of the comparison.

    Attributes:
        name: the row's name in reports.
        objective: a registered objective name, ``none`` (the untouched student) or ``trl_sft``
            (the SFT baseline through TRL's ``SFTTrainer``).
        params: the objective's keyword arguments.
        student: ``same`` (the student sharing the teacher's tokenizer) or ``cross`` (the student
            with its own tokenizer).
        hidden: the trainer's ``hidden`` block (hidden-state distillation added to the
            objective, e.g. ``{weight: 1.0, loss: cosine}``); empty: none.

    Batches an objective takes from its ``dataset`` source are the task's reference completions;
    from its ``teacher`` source, the fixed teacher samples.
    """

    name: str
    objective: str
    params: dict[str, Any] = field(default_factory=dict)
    student: StudentKind = "same"
    hidden: dict[str, Any] = field(default_factory=dict)


BUILTIN_METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("untouched", "none"),
        MethodSpec("untouched_cross", "none", student="cross"),
        MethodSpec("sft", "sft"),
        MethodSpec("trl_sft", "trl_sft"),
        MethodSpec("supervised_kd", "supervised_kd", {"source": "teacher"}),
        MethodSpec("reverse_kl", "reverse_kl"),
        MethodSpec("gkd", "gkd", {"lmbda": 0.5, "beta": 0.5, "off_policy": "teacher"}),
        MethodSpec("policy_gradient", "policy_gradient"),
        MethodSpec("sft_cross", "sft", student="cross"),
        MethodSpec("gold", "gold", student="cross"),
        MethodSpec("uld", "uld", student="cross"),
        MethodSpec("next_byte_cross", "next_byte", student="cross"),
    )
}


def method_spec(entry: str | dict[str, Any]) -> MethodSpec:
    """A built-in method by name, or a dict ``{name, objective, params, student, hidden}``."""
    if isinstance(entry, str):
        if entry not in BUILTIN_METHODS:
            raise ConfigError(
                f"unknown method {entry!r}; use one of {sorted(BUILTIN_METHODS)} "
                "or a dict with name/objective/params/student"
            )
        return BUILTIN_METHODS[entry]
    base = BUILTIN_METHODS.get(entry.get("name", ""))
    merged = {**(vars(base) if base else {}), **entry}
    if "name" not in merged or "objective" not in merged:
        raise ConfigError(f"method {entry!r} needs a 'name' and an 'objective'")
    check_known_keys("method", merged, MethodSpec.__dataclass_fields__, where=repr(merged["name"]))
    if not isinstance(merged.get("hidden", {}), dict):
        raise ConfigError(f"method {merged['name']!r}: hidden must be a mapping (the hidden block)")
    return MethodSpec(**merged)


@dataclass
class TrainSettings:
    """The budget every method gets (same for all)."""

    steps: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    max_new_tokens: int = 48
    temperature: float = 1.0


@dataclass(frozen=True)
class RunOptions:
    """How one trainer run of the harness differs from a plain comparison run.

    Attributes:
        eval_every: optimizer steps between evaluations on the ``eval_prompts`` the run is given
            (the learning curve); 0 = none.
        eval_prompts: how many of those prompts an evaluation uses (0 = no evaluation at all).
        init_from: saved weights the student starts from (a warm-up branch), else None.
        checkpoint_every: keep a checkpoint every this many steps (the warm-up's branch points).
        sample_seed: the seed of the fixed teacher samples (None: the run's seed).
        forward_nll: evaluations also score held-out teacher samples (``eval.forward_nll``).
    """

    eval_every: int = 0
    eval_prompts: int = 0
    init_from: str | None = None
    checkpoint_every: int = 0
    sample_seed: int | None = None
    forward_nll: bool = False


def trainer_config(
    spec: MethodSpec,
    settings: TrainSettings,
    seed: int,
    student_dir: str,
    teacher_dir: str,
    output_dir: Path,
    options: RunOptions = RunOptions(),
) -> Config:
    """The trainer's config for one (method, seed) run of the comparison budget ``settings``:
    one micro-batch of ``batch_size`` prompts per optimizer step, a fresh start, and what
    ``options`` asks for (by default no evaluation and no intermediate checkpoints: the harness
    evaluates every method the same way after training)."""
    o = options
    raw = {
        "student": {
            "path": student_dir,
            "max_length": _context(student_dir),
            "init_from": o.init_from,
        },
        "teacher": {
            "path": teacher_dir,
            "mode": "auto",
            "samples": "fixed",
            "sample_seed": o.sample_seed,
        },
        "rollout": {"max_new_tokens": settings.max_new_tokens, "temperature": settings.temperature},
        "objective": {"name": spec.objective, "params": dict(spec.params)},
        "hidden": dict(spec.hidden),
        "optim": {
            "optimizer": "adamw",
            "lr": settings.lr,
            "weight_decay": 0.0,
            "scheduler": "constant",
            "grad_clip": settings.max_grad_norm,
        },
        "train": {
            "steps": settings.steps,
            "micro_batch_size": settings.batch_size,
            "grad_accum": 1,
            "seed": seed,
            "output_dir": str(output_dir),
            "checkpoint_every": o.checkpoint_every,
            "keep_checkpoints": 1_000_000 if o.checkpoint_every else 1,
            "resume": False,
        },
        "eval": {"num_prompts": o.eval_prompts, "every": o.eval_every, "batch_size": 64},
        "logging": {"progress_bar": False},
    }
    if o.forward_nll:  # only when on: the configs (and fingerprints) of other runs are unchanged
        raw["eval"]["forward_nll"] = True
    return from_dict(raw)


def _context(model_dir: str) -> int:
    """The model's context length (``max_position_embeddings``; 2048 when it does not say)."""
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    cfg = cfg.get("text_config", cfg)
    return int(cfg.get("max_position_embeddings") or 2048)

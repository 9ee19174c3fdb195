"""The comparison's config: a YAML file with a task block, a models block, the methods, the shared
training budget, the seeds and where to write the report.

    task: {name: arithmetic, digits: 3, num_eval: 200}
    models: {kind: arithmetic}  # or {kind: paths, teacher: DIR, student: DIR, cross_student: DIR}
    methods: [untouched, sft, reverse_kl] # built-in names or {name, objective, params, student}
    train: {steps: 50, batch_size: 32, lr: 1.0e-3, max_new_tokens: 40}
    seeds: [0, 1, 2]
    workers: 2                            # parallel processes (one torch thread each)
    output_dir: outputs/compare/arithmetic
    budget: {match: flops, reference: sft} # optional: equal estimated FLOPs (compare/budget.py);
                                           # default {match: steps}: train.steps for every method
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from onpolicy.compare.budget import BudgetSpec, parse_budget
from onpolicy.compare.methods import MethodSpec, TrainSettings, method_spec
from onpolicy.errors import ConfigError

_KEYS = {"task", "models", "methods", "train", "seeds", "workers", "output_dir", "eval", "budget"}


@dataclass
class CompareConfig:
    """A validated comparison config (see the module docstring for the YAML shape)."""

    task: dict[str, Any]
    models: dict[str, Any]
    methods: list[MethodSpec]
    train: TrainSettings = field(default_factory=TrainSettings)
    seeds: list[int] = field(default_factory=lambda: [0])
    workers: int = 1
    output_dir: Path = Path("outputs/compare")
    eval_max_new_tokens: int | None = None
    budget: BudgetSpec = field(default_factory=BudgetSpec)


def parse_config(raw: dict[str, Any]) -> CompareConfig:
    """Validate a loaded YAML mapping into a ``CompareConfig`` (one-line errors naming the key)."""
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"unknown compare config keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    for key in ("task", "models", "methods"):
        if key not in raw:
            raise ConfigError(f"compare config needs a {key!r} block")
    task, models = dict(raw["task"]), dict(raw["models"])
    if "name" not in task:
        raise ConfigError("task block needs a 'name' (arithmetic, chat_pair or dataset)")
    if models.get("kind") not in ("arithmetic", "paths"):
        raise ConfigError(f"models.kind={models.get('kind')!r}; use 'arithmetic' or 'paths'")
    methods = [method_spec(m) for m in raw["methods"]]
    names = [m.name for m in methods]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"methods must be a non-empty list of distinct names; got {names}")
    train_raw = dict(raw.get("train") or {})
    known = {f.name for f in fields(TrainSettings)}
    if set(train_raw) - known:
        raise ConfigError(
            f"unknown train keys {sorted(set(train_raw) - known)}; known {sorted(known)}"
        )
    train = TrainSettings(**train_raw)
    if train.steps < 1 or train.batch_size < 1 or train.lr <= 0:
        raise ConfigError(f"train needs steps >= 1, batch_size >= 1, lr > 0; got {train}")
    seeds = [int(s) for s in raw.get("seeds", [0])]
    workers = int(raw.get("workers", 1))
    if not seeds or workers < 1:
        raise ConfigError(f"need at least one seed and workers >= 1; got {seeds}, {workers}")
    return CompareConfig(
        task=task,
        models=models,
        methods=methods,
        train=train,
        seeds=seeds,
        workers=workers,
        output_dir=Path(raw.get("output_dir", "outputs/compare")),
        eval_max_new_tokens=(raw.get("eval") or {}).get("max_new_tokens"),
        budget=parse_budget(raw.get("budget"), methods),
    )


def load_config(path: str | Path, overrides: list[str] = ()) -> CompareConfig:
    """Read a YAML file and apply ``key=value`` overrides (``train.steps=10``, ``seeds=[0,1]``)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"compare config {str(path)!r} does not exist; see configs/compare/")
    raw = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.steps=10)")
        key, value = item.split("=", 1)
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return parse_config(raw)

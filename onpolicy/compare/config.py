"""The comparison's config: a YAML file with a task block, a models block, the methods, the shared
training budget, the seeds and where to write the report.

    task: {name: arithmetic, digits: 3, num_eval: 200}
    models: {kind: arithmetic}  # or {kind: paths, teacher: DIR, student: DIR, cross_student: DIR}
        # kind: paths may add init_from: DIR/seed-{seed}/plateau: per seed, a student warmed
        # outside the harness that every method starts from (compare/warm.py seed_starts)
        # or {kind: long_arithmetic, student: small|medium, teacher: base|large, teacher_steps: N}
    methods: [untouched, sft, reverse_kl] # built-in names or {name, objective, params, student}
    train: {steps: 50, batch_size: 32, lr: 1.0e-3, max_new_tokens: 40}
    seeds: [0, 1, 2]
    workers: 2                            # parallel processes (one torch thread each)
    output_dir: outputs/compare/arithmetic
    budget: {match: flops, reference: sft, teacher_data: paid}
        # optional: equal estimated FLOPs (compare/budget.py); default {match: steps}: train.steps
        # for every method. teacher_data: paid (default) | free: the accounting the FLOPs match
        # and the report's headline use; the report shows both (compare/accounting.py)
    eval: {every: 20, num_prompts: 200, max_new_tokens: 40}
        # every: learning curves: the trainer evaluates every 20 optimizer steps on the held-out
        # prompts (num_prompts of them; default all); score, KL/token and teacher NLL/byte at the
        # FLOPs spent so far (compare/curves.py). 0 (default): end points only
        # forward_nll: true (opt-in): also the student's NLL per token and per byte of one held-out
        # temperature-1 teacher sample per prompt, drawn once per run (trainer/forward_pool.py)
    validation: {size: 200}
        # training prompts held out for choices (LR grid, warm-up curve and plateau), trained on by
        # no run; default: a tenth of them, at most 200, when lr_search or warm_start is set
    warm_start: {method: sft, steps: 800, every: 50, branch_at: [200, plateau],
                 plateau: {window: 3, min_gain: 0.01, min_share: 0.0}, cold: true, lr: 2.0e-4,
                 cache_dir: DIR,
                 shared: false}
        # a warm-up trained once per seed and cached; every method branches from each branch point
        # (compare/warm.py); cold: also from the untouched student (the negative control);
        # shared: one warm-up (the first seed's) and its teacher samples for every seed
    lr_search: {grid: [1.0e-4, 3.0e-4, 1.0e-3], steps: 100, methods: [reverse_kl]}
        # per method (and start point), the learning rate with the best validation score
        # (compare/lr_search.py); default: train.lr for every method
    reuse_runs: true
        # keep every finished run and LR trial under <output_dir>/reuse/ and read an identical one
        # back instead of training it again: run in stages (seed 0, then more seeds) (reuse.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from onpolicy.compare.budget import BudgetSpec, parse_budget
from onpolicy.compare.lr_search import LRSearchSpec, parse_lr_search
from onpolicy.compare.methods import MethodSpec, TrainSettings, method_spec
from onpolicy.compare.warm import WarmSpec, parse_warm, seed_starts
from onpolicy.errors import ConfigError, check_known_keys

_KEYS = {
    "task",
    "models",
    "methods",
    "train",
    "seeds",
    "workers",
    "output_dir",
    "eval",
    "budget",
    "validation",
    "warm_start",
    "lr_search",
    "reuse_runs",
}
_EVAL_KEYS = {"every", "num_prompts", "max_new_tokens", "forward_nll"}


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
    eval_every: int = 0
    eval_prompts: int | None = None
    eval_forward_nll: bool = False
    validation_size: int | None = None
    warm_start: WarmSpec | None = None
    lr_search: LRSearchSpec | None = None
    reuse_runs: bool = False


def _check_long_models(models: dict[str, Any], task: dict[str, Any]) -> None:
    """``models: {kind: long_arithmetic, student: small | medium, teacher: base | large,
    teacher_steps: N}``: the cached models of the ``long_arithmetic`` task
    (``onpolicy.tasks.long_models``), built for the task block's digits, min_digits and variants
    (the teacher of shape ``teacher``, default base (445k; large: 1.77M), trained ``teacher_steps``,
    default 1000); the student is saved untrained (warm it with ``warm_start``)."""
    from onpolicy.tasks.long_models import teacher_spec

    if task.get("name") != "long_arithmetic":
        raise ConfigError("models.kind=long_arithmetic needs task.name: long_arithmetic")
    known = ("kind", "student", "teacher", "teacher_steps")
    check_known_keys("models", models, known, where="kind long_arithmetic")
    try:
        teacher_spec(str(models.get("teacher", "base")))
    except ConfigError as exc:
        raise ConfigError(f"models.{exc}") from None
    if models.get("student", "medium") not in ("small", "medium"):
        raise ConfigError(
            f"models.student={models['student']!r}; use 'small' (21x) or 'medium' (5.3x)"
        )


def _check_cut(models: dict[str, Any]) -> None:
    """``cut_layers: [0, 2]`` (kind arithmetic): the student is cut from the teacher's decoder
    layers (``onpolicy.tasks.cut_students``); ``cut_fresh: true``: that shape, re-initialized."""
    if "cut_layers" not in models and "cut_fresh" not in models:
        return
    layers = models.get("cut_layers")
    if models["kind"] != "arithmetic":
        raise ConfigError("models.cut_layers needs models.kind: arithmetic")
    if (
        not isinstance(layers, list)
        or not layers
        or not all(isinstance(i, int) and i >= 0 for i in layers)
    ):
        raise ConfigError(f"models.cut_layers={layers!r}; give teacher layer indices, e.g. [0, 2]")
    if not isinstance(models.get("cut_fresh", False), bool):
        raise ConfigError(f"models.cut_fresh={models['cut_fresh']!r} must be true or false")


def _check_teacher_tokenizer(models: dict[str, Any], methods: list) -> None:
    """``teacher_tokenizer: bpe`` (kind arithmetic): the teacher is rebuilt with the BPE student's
    tokenizer and the BPE student is the same-tokenizer student (``onpolicy.tasks.bpe_teacher``)."""
    value = models.get("teacher_tokenizer", "char")
    if value == "char":
        return
    if value != "bpe":
        raise ConfigError(f"models.teacher_tokenizer={value!r}; use 'char' (default) or 'bpe'")
    if models["kind"] != "arithmetic" or "cut_layers" in models:
        raise ConfigError(
            "models.teacher_tokenizer: bpe needs models.kind: arithmetic, no cut_layers"
        )
    cross = [m.name for m in methods if m.student == "cross"]
    if cross:
        raise ConfigError(
            f"models.teacher_tokenizer: bpe makes teacher and student share a tokenizer; drop the "
            f"cross-tokenizer methods {cross}"
        )


def parse_config(raw: dict[str, Any]) -> CompareConfig:
    """Validate a loaded YAML mapping into a ``CompareConfig`` (one-line errors naming the key)."""
    check_known_keys("compare config", raw, _KEYS)
    for key in ("task", "models", "methods"):
        if key not in raw:
            raise ConfigError(f"compare config needs a {key!r} block")
    task, models = dict(raw["task"]), dict(raw["models"])
    if "name" not in task:
        raise ConfigError("task block needs a 'name' (arithmetic, chat_pair or dataset)")
    if models.get("kind") not in ("arithmetic", "long_arithmetic", "paths"):
        raise ConfigError(
            f"models.kind={models.get('kind')!r}; use 'arithmetic', 'long_arithmetic' or 'paths'"
        )
    if models["kind"] == "long_arithmetic":
        _check_long_models(models, task)
    _check_cut(models)
    methods = [method_spec(m) for m in raw["methods"]]
    _check_teacher_tokenizer(models, methods)
    names = [m.name for m in methods]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"methods must be a non-empty list of distinct names; got {names}")
    train_raw = dict(raw.get("train") or {})
    check_known_keys("train", train_raw, (f.name for f in fields(TrainSettings)))
    train = TrainSettings(**train_raw)
    if train.steps < 1 or train.batch_size < 1 or train.lr <= 0:
        raise ConfigError(f"train needs steps >= 1, batch_size >= 1, lr > 0; got {train}")
    seeds = [int(s) for s in raw.get("seeds", [0])]
    workers = int(raw.get("workers", 1))
    if not seeds or workers < 1:
        raise ConfigError(f"need at least one seed and workers >= 1; got {seeds}, {workers}")
    ev = dict(raw.get("eval") or {})
    check_known_keys("eval", ev, _EVAL_KEYS)
    every, n_eval = int(ev.get("every", 0)), ev.get("num_prompts")
    if every < 0 or (n_eval is not None and int(n_eval) < 1):
        raise ConfigError(f"eval.every={every} must be >= 0 and eval.num_prompts >= 1")
    if "init_from" in models and raw.get("warm_start"):
        raise ConfigError("models.init_from and warm_start both set a warm start; keep one")
    seed_starts(models, seeds)  # every seed's warm folder exists, before any model loads
    val = (raw.get("validation") or {}).get("size")
    if val is not None and int(val) < 1:
        raise ConfigError(f"validation.size={val}; use an int >= 1 (or leave it out)")
    return CompareConfig(
        task=task,
        models=models,
        methods=methods,
        train=train,
        seeds=seeds,
        workers=workers,
        output_dir=Path(raw.get("output_dir", "outputs/compare")),
        eval_max_new_tokens=ev.get("max_new_tokens"),
        budget=parse_budget(raw.get("budget"), methods),
        eval_every=every,
        eval_prompts=None if n_eval is None else int(n_eval),
        eval_forward_nll=bool(ev.get("forward_nll", False)),
        validation_size=None if val is None else int(val),
        warm_start=parse_warm(raw.get("warm_start")),
        lr_search=parse_lr_search(raw.get("lr_search"), names),
        reuse_runs=bool(raw.get("reuse_runs", False)),
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

"""Warm starts: a warm-up stage (e.g. SFT on teacher samples) trained once per seed and cached,
and the branch points along its curve that every method starts from (``warm_start`` in a compare
config; the cold start stays as the negative control unless ``cold: false``).

    warm_start:
      method: sft                 # any method (built-in name or {name, objective, params})
      steps: 800                  # warm-up length: optimizer steps of train.batch_size prompts
      every: 50                   # evaluate (validation split) and keep a checkpoint every 50 steps
      branch_at: [200, plateau]   # warm-up steps (multiples of every) and/or plateau
      plateau: {window: 3, min_gain: 0.01}  # min_share: 0.4 widens the window to 40% of the run
      cold: true                  # also run every method from the untouched student
      shared: false               # true: one warm-up (the first seed's) for every seed
      lr: 2.0e-4                  # the warm-up's learning rate (default: train.lr)
      cache_dir: outputs/warm     # default: <output_dir>/warm

``shared: true`` trains the first seed's warm-up only and branches every seed from it, and every
run trains on the warm-up's fixed teacher samples (one dataset, as a practitioner's; without
``shared`` each seed draws its own, and the warm-up draws with its warm seed, below): the seeds
then differ in the arms' sampling and batch order only. A cheaper, stated design for a budget
that cannot pay one warm-up per seed.

The plateau (``curves.plateau_step``): the first evaluation at which the best validation score so
far exceeds the best of ``window`` evaluations earlier by less than ``min_gain``, once the best
score has risen at least ``min_gain`` above the first evaluation; the warm-up's last step (flagged
"not reached") when that never happens. A task without a metric (``metric: none``) has no
score: the rule then runs on minus the validation KL(student || teacher) per byte (``min_gain`` in
nats per byte). The warm-up is evaluated on the
validation split carved from the training prompts (``validation.size``), never the held-out split.

Without ``shared``, the warm-up of seed ``s`` trains with the seed ``warm_seed(s)``: its teacher
samples (one fixed sample per training prompt, drawn from the run's seed) are distinct from the
ones the branches of seed ``s`` draw, so continued SFT (and GKD's off-policy half) trains on
fresh teacher samples, the data that ``teacher_data: paid`` charges it for, not on the warm-up's
data again.

Cache: ``<cache_dir>/<key>/seed<s>/`` holds ``warm.json`` (curve, branch points) and one
``branch-<step>/model.safetensors`` per branch point; ``key`` hashes everything the warm-up's
weights depend on (method, steps, lr, batch, sampling, models, task, seed, training prompts,
evaluation interval) and the branch rule, so a rerun with the same settings trains nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onpolicy.compare.accounting import Flops
from onpolicy.compare.curves import CurvePoint, plateau_step, warm_metric
from onpolicy.compare.methods import MethodSpec, method_spec
from onpolicy.errors import ConfigError, check_known_keys
from onpolicy.types import Prompt

PLATEAU = "plateau"
WARM_SEED_OFFSET = 10_000  # the warm-up's seed: its teacher samples are not the branches'
_KEYS = {"method", "steps", "every", "branch_at", "plateau", "cold", "lr", "cache_dir", "shared"}


@dataclass(frozen=True)
class WarmSpec:
    """The ``warm_start`` block (see the module docstring)."""

    method: MethodSpec
    steps: int
    every: int
    branch_at: tuple[int | str, ...]
    window: int = 3
    min_gain: float = 0.01
    min_share: float = 0.0
    cold: bool = True
    lr: float | None = None
    cache_dir: str | None = None
    shared: bool = False


@dataclass(frozen=True)
class Start:
    """Where a run starts: ``cold`` (the untouched student) or a warm-up branch.

    Attributes:
        name: ``cold``, ``step<k>`` or ``plateau``.
        step: the warm-up step it branches from (0 for cold).
        init_from: the folder of the branch weights (None for cold).
        flops: the warm-up's training FLOPs up to ``step`` (both accountings).
        reached: for ``plateau``, whether the rule held before the warm-up's end.
    """

    name: str = "cold"
    step: int = 0
    init_from: str | None = None
    flops: Flops = field(default_factory=lambda: Flops(0.0, 0.0))
    reached: bool = True


COLD = Start()


def parse_warm(raw: dict[str, Any] | None) -> WarmSpec | None:
    """Validate the ``warm_start`` block (one-line errors); None when absent."""
    if not raw:
        return None
    raw = dict(raw)
    check_known_keys("warm_start", raw, _KEYS)
    if "method" not in raw or "steps" not in raw:
        raise ConfigError("warm_start needs a method (e.g. sft) and steps (e.g. 800)")
    method = method_spec(raw["method"])
    steps = int(raw["steps"])
    every = int(raw.get("every", max(steps // 10, 1)))
    branch = raw.get("branch_at", [PLATEAU])
    branch = tuple(branch if isinstance(branch, list) else [branch])
    plateau = dict(raw.get("plateau") or {})
    if set(plateau) - {"window", "min_gain", "min_share"}:
        raise ConfigError(
            f"warm_start.plateau takes window, min_gain, min_share; got {sorted(plateau)}"
        )
    spec = WarmSpec(
        method=method,
        steps=steps,
        every=every,
        branch_at=branch,
        window=int(plateau.get("window", 3)),
        min_gain=float(plateau.get("min_gain", 0.01)),
        min_share=float(plateau.get("min_share", 0.0)),
        cold=bool(raw.get("cold", True)),
        lr=None if raw.get("lr") is None else float(raw["lr"]),
        cache_dir=raw.get("cache_dir"),
        shared=bool(raw.get("shared", False)),
    )
    _check(spec)
    return spec


def _check(spec: WarmSpec) -> None:
    if method_trains_nothing(spec.method):
        raise ConfigError(f"warm_start.method={spec.method.name!r} trains nothing; use e.g. sft")
    if spec.steps < 1 or spec.every < 1 or spec.window < 1:
        raise ConfigError("warm_start needs steps >= 1, every >= 1 and plateau.window >= 1")
    if not 0.0 <= spec.min_share < 1.0:
        raise ConfigError(f"warm_start.plateau.min_share={spec.min_share}; use 0 <= min_share < 1")
    if not spec.branch_at:
        raise ConfigError("warm_start.branch_at is empty; give steps and/or 'plateau'")
    for b in spec.branch_at:
        if b == PLATEAU:
            continue
        if not isinstance(b, int) or not 0 < b <= spec.steps or b % spec.every:
            raise ConfigError(
                f"warm_start.branch_at has {b!r}; use 'plateau' or a step in 1..{spec.steps} "
                f"that is a multiple of warm_start.every={spec.every}"
            )


def warm_seed(seed: int, shared: bool = False) -> int:
    """The training seed of the warm-up of ``seed`` (prompt order and teacher samples); with
    ``shared`` the seed itself: the warm-up and every run train on one dataset (see above)."""
    return seed if shared else seed + WARM_SEED_OFFSET


def method_trains_nothing(spec: MethodSpec) -> bool:
    return spec.objective == "none"


def warm_key(parts: dict[str, Any]) -> str:
    """A short stable hash of the JSON of ``parts`` (the warm-up's cache key)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prompts_digest(prompts: Sequence[Prompt]) -> str:
    return warm_key({"prompts": [(p.text, str(p.messages)) for p in prompts]})


def cache_folder(cfg: Any, dirs: Any, seed: int, train_prompts: Sequence[Prompt]) -> Path:
    """``<cache_dir>/<key>/seed<seed>`` for the warm-up of ``cfg`` (``CompareConfig``)."""
    w: WarmSpec = cfg.warm_start
    warm = {k: v for k, v in asdict(w).items() if k != "shared"}  # keys as before it existed
    if not w.min_share:  # the default rule: cache keys as before min_share existed
        warm.pop("min_share")
    parts = {
        "warm": {**warm, "cold": None, "cache_dir": None},
        "train": asdict(cfg.train),
        "task": cfg.task,
        "teacher": dirs.teacher,
        "student": dirs.student if w.method.student == "same" else dirs.cross_student,
        "prompts": prompts_digest(train_prompts),
        "validation_size": cfg.validation_size,
        "run_seed": warm_seed(seed, w.shared),
    }
    root = Path(w.cache_dir) if w.cache_dir else Path(cfg.output_dir) / "warm"
    return root / warm_key(parts) / f"seed{seed}"


def branch_steps(spec: WarmSpec, curve: Sequence[CurvePoint]) -> list[tuple[str, int, bool]]:
    """``(name, step, reached)`` of every branch point: explicit steps, then the plateau."""
    out = []
    for b in spec.branch_at:
        if b == PLATEAU:
            key, _ = warm_metric([{"curve": [vars(p) for p in curve]}])  # KL/byte: no metric
            step, reached = plateau_step(curve, spec.window, spec.min_gain, key, spec.min_share)
            out.append((PLATEAU, step, reached))
        else:
            out.append((f"step{b}", int(b), True))
    return out


def keep_branches(
    run_dir: Path, folder: Path, branches: Sequence[tuple[str, int, bool]]
) -> dict[int, str]:
    """Copy the model weights of each branch step's checkpoint (the final student for the last
    step) to ``folder/branch-<step>/``; drop the checkpoints. Returns ``{step: folder}``."""
    from onpolicy.trainer.checkpoint import list_checkpoints

    by_step = {int(p.name.split("-")[-1]): p for p in list_checkpoints(run_dir)}
    out = {}
    for _, step, _ in branches:
        src = by_step.get(step)
        if src is None:
            raise ConfigError(f"the warm-up kept no checkpoint at step {step}; check warm_start")
        dst = folder / f"branch-{step}"
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "model.safetensors", dst / "model.safetensors")
        out[step] = str(dst)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return out


def starts_from(record: dict[str, Any]) -> list[Start]:
    """The branch ``Start``s stored in a ``warm.json`` record."""
    return [
        Start(b["name"], b["step"], b["path"], Flops(**b["flops"]), b["reached"])
        for b in record["branches"]
    ]


def branch_record(
    branches: Sequence[tuple[str, int, bool]], paths: dict[int, str], curve: Sequence[CurvePoint]
) -> list[dict[str, Any]]:
    """JSON-able branch points with the warm-up FLOPs spent up to each."""
    at = {p.step: p for p in curve}
    out = []
    for name, step, reached in branches:
        point = at[step]
        flops = {"free": point.flops_free, "paid": point.flops_paid}
        out.append(
            {"name": name, "step": step, "path": paths[step], "flops": flops, "reached": reached}
        )
    return out


def with_lr(settings: Any, spec: WarmSpec) -> Any:
    """The training settings of the warm-up: its own steps and learning rate."""
    return dataclasses.replace(settings, steps=spec.steps, lr=spec.lr or settings.lr)


def seed_starts(models: dict[str, Any], seeds: Sequence[int]) -> dict[int, Start] | None:
    """``models.init_from`` (``kind: paths``): per seed, a student warmed outside the harness
    (e.g. ``examples/evidence/warm_students.py`` on a GPU), every method starting from it; a
    ``{seed}`` in the path names one folder per seed. Start ``warm``, its step read from the
    folder's ``build.json`` (0 when absent); its warm-up FLOPs are not counted (0). None when the
    key is absent; a one-line error when a folder is missing or the block is not ``kind: paths``."""
    pattern = models.get("init_from")
    if pattern is None:
        return None
    if models.get("kind") != "paths":
        raise ConfigError("models.init_from needs models.kind: paths (the student's shape folder)")
    out = {}
    for seed in seeds:
        folder = Path(str(pattern).format(seed=seed)).expanduser()
        if not (folder / "config.json").exists():
            raise ConfigError(
                f"models.init_from for seed {seed}: {folder} holds no saved model; "
                "warm the student first (examples/evidence/warm_students.py)"
            )
        record = folder / "build.json"
        step = json.loads(record.read_text()).get("step", 0) if record.exists() else 0
        out[seed] = Start("warm", int(step), str(folder.resolve()))
    return out

"""Models for the ``long_arithmetic`` task: a large teacher and small students, cached on disk.

The teacher is trained by supervised learning on gold scratchpads (random step orders, so it learns
the orders' mixture) to a high exact match; students are saved at their random initialization (a
cold start; warm starts are made by the experiment, by SFT on the teacher's samples). Tokenizer,
model shape and cache root are the ``arithmetic`` task's (``arith_models``). Each model's folder
name hashes what it is built from, so reruns are free and a change rebuilds only what changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from onpolicy.errors import ConfigError
from onpolicy.tasks.arith_models import ModelSpec, cache_root, char_tokenizer
from onpolicy.tasks.long_arithmetic import completion_tokens, long_arithmetic_task
from onpolicy.tasks.supervised import evaluate_exact_match, train_supervised

TEACHERS = {  # named teacher shapes (``teacher_spec``); the students are 21k and 83k
    "base": ModelSpec(layers=3, heads=3, ffn=384),  # 445k: 5.3x the medium student
    "large": ModelSpec(layers=3, heads=6, ffn=768),  # 1.77M: 21x medium, 84x small
}


def teacher_spec(name: str) -> ModelSpec:
    """The teacher shape called ``name`` in ``TEACHERS`` (one-line error otherwise)."""
    if name not in TEACHERS:
        raise ConfigError(f"teacher={name!r}; use one of {sorted(TEACHERS)}")
    return TEACHERS[name]


@dataclass(frozen=True)
class LongModelsConfig:
    """What the cached models are built from.

    Attributes:
        digits, min_digits, variants, num_train, data_seed: the task (``long_arithmetic_task``'s
            options).
        teacher: the teacher's shape (one of ``TEACHERS``), trained ``teacher_steps`` steps of
            ``batch_size`` at ``lr``.
        students: named student shapes, saved untrained (``{"small": ModelSpec(...)}``).
    """

    digits: int = 6
    min_digits: int | None = None
    variants: int = 4
    num_train: int = 8000
    data_seed: int = 0
    teacher: ModelSpec = TEACHERS["base"]  # the cache key hashes the shape, not its name
    teacher_steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    students: tuple[tuple[str, ModelSpec], ...] = (
        ("small", ModelSpec(layers=2, heads=1, ffn=64)),  # 21k: the teacher is 21x larger
        ("medium", ModelSpec(layers=2, heads=2, ffn=128)),  # 83k: 5.3x
    )
    version: int = 1  # bump when the recipe changes


@dataclass(frozen=True)
class LongModels:
    """Folders (``save_pretrained`` model + tokenizer) and measured facts of the built models.

    Attributes:
        teacher_dir: the teacher.
        student_dirs: each named student at its random initialization.
        teacher_score: the teacher's greedy exact match on the ``valid`` split when built.
        params: parameter count of each model (``teacher`` and the students' names).
    """

    teacher_dir: Path
    student_dirs: dict[str, Path]
    teacher_score: float
    params: dict[str, int]


def max_new_tokens(digits: int) -> int:
    """Completion budget: the completion, EOS and 4 tokens of slack."""
    return completion_tokens(digits) + 5


def _key(blob: dict) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def long_models(
    cfg: LongModelsConfig | None = None, root: Path | None = None, log=print
) -> LongModels:
    """The cached models for ``cfg``, built on first use (the teacher takes minutes on a CPU)."""
    cfg = cfg or LongModelsConfig()
    base = (root or cache_root()) / "long_arithmetic"
    task_fields = {k: v for k, v in asdict(cfg).items() if k != "students"}
    teacher_dir = base / f"teacher-{_key(task_fields)}"
    if not (teacher_dir / "build.json").exists():
        _build_teacher(cfg, teacher_dir, log)
    record = json.loads((teacher_dir / "build.json").read_text())
    params, student_dirs = {"teacher": record["params"]}, {}
    for name, spec in cfg.students:
        folder = base / f"student-{_key({'spec': asdict(spec), 'seed': cfg.data_seed})}"
        if not (folder / "build.json").exists():
            _save(spec.build(char_tokenizer(), seed=cfg.data_seed), folder, {})
        student_dirs[name] = folder
        params[name] = json.loads((folder / "build.json").read_text())["params"]
    return LongModels(teacher_dir, student_dirs, record["valid_exact_match"], params)


def _build_teacher(cfg: LongModelsConfig, folder: Path, log) -> None:
    """Train the teacher on gold scratchpads and save it with its score on the ``valid`` split."""
    if cfg.teacher_steps < 1:
        raise ConfigError(f"teacher_steps={cfg.teacher_steps}; use >= 1")
    task = long_arithmetic_task(
        digits=cfg.digits,
        variants=cfg.variants,
        num_train=cfg.num_train,
        seed=cfg.data_seed,
        eval_split="valid",
        min_digits=cfg.min_digits,
    )
    tok = char_tokenizer()
    start = time.perf_counter()
    model = cfg.teacher.build(tok, seed=cfg.data_seed)
    losses = train_supervised(
        model, tok, task.train_prompts, cfg.teacher_steps, cfg.batch_size, cfg.lr, cfg.data_seed
    )
    score = evaluate_exact_match(model, tok, task, max_new_tokens(cfg.digits))
    seconds = time.perf_counter() - start
    log(
        f"[long_arithmetic] teacher trained {cfg.teacher_steps} steps in {seconds:.0f}s: "
        f"final loss {losses[-1]:.3f}, valid exact match {score:.3f}"
    )
    _save(model, folder, {"valid_exact_match": score, "seconds": seconds, "losses": losses[::50]})


def _save(model, folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    (folder / "build.json").write_text(json.dumps({**record, "params": params}, indent=1))

"""Finished runs kept and reused across invocations (``reuse_runs: true`` in a compare config), so a
long comparison can run in stages: seed 0 first, then ``seeds: [0, 1, 2]`` trains only seeds 1
and 2, and the learning-rate grid (trained on the first seed) is not trained again.

Each finished main-grid job (``run.run_job``) and learning-rate trial (``training.lr_trial``) is
stored as ``<output_dir>/reuse/<kind>-<key>.json``; ``key`` hashes everything its result depends
on: the task, the model folders, the training settings (steps and learning rate included), the
method, the seed, the weights it starts from (a warm-up branch folder, itself keyed by the
warm-up's settings), the evaluation settings and the validation split's size. A failed job is
never stored. Off by default: a code change does not change the key, so reuse is for one
experiment run in stages, not across versions of the engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from onpolicy.compare.warm import warm_key


def run_key(cfg: Any, dirs: Any, spec: Any, seed: int, settings: Any, init_from: str | None,
            extra: dict[str, Any] | None = None) -> str:  # fmt: skip
    """The hash of what one run's result depends on (see the module docstring)."""
    parts = {
        "task": cfg.task,
        "models": vars(dirs),
        "train": asdict(settings),
        "method": asdict(spec),
        "seed": seed,
        "init_from": init_from,
        "eval": [cfg.eval_every, cfg.eval_prompts, cfg.eval_max_new_tokens]
        + (["forward_nll"] if cfg.eval_forward_nll else []),  # keys of older runs unchanged
        "validation_size": cfg.validation_size,
        **(extra or {}),
    }
    return warm_key(parts)


def _path(cfg: Any, kind: str, key: str) -> Path:
    return Path(cfg.output_dir) / "reuse" / f"{kind}-{key}.json"


def load(cfg: Any, kind: str, key: str) -> dict[str, Any] | None:
    """The stored record of run ``key`` (None when reuse is off or it never finished)."""
    path = _path(cfg, kind, key)
    if not getattr(cfg, "reuse_runs", False) or not path.is_file():
        return None
    return json.loads(path.read_text())


def save(cfg: Any, kind: str, key: str, record: dict[str, Any]) -> None:
    """Store a finished run's record (nothing when reuse is off)."""
    if not getattr(cfg, "reuse_runs", False):
        return
    path = _path(cfg, kind, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)  # a job killed mid-write leaves no half record

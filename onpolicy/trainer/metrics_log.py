"""Metrics out: one JSON object per line in ``<output_dir>/metrics.jsonl``, and accelerate's
trackers (TensorBoard; W&B and trackio when installed). Only the main process writes.

Each record is appended as one line with one ``write``; a run killed or out of disk space in the
middle leaves at most a torn *last* line, which ``read_metrics`` drops (a damaged line anywhere
else is an error naming the line). On resume the file is rewritten atomically (temporary file,
fsync, rename) with the records up to the checkpoint's step."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from onpolicy.config import Config, LoggingConfig
from onpolicy.errors import TrainingError
from onpolicy.trainer.disk import disk_errors

METRICS_FILE = "metrics.jsonl"


def tracker_names(cfg: LoggingConfig) -> list[str]:
    """accelerate ``log_with`` names for the enabled trackers that are installed (others warn)."""
    wanted = {"tensorboard": cfg.tensorboard, "wandb": cfg.wandb, "trackio": cfg.trackio}
    modules = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
    names = []
    for name, on in wanted.items():
        if not on:
            continue
        if importlib.util.find_spec(modules[name]) is None:
            warnings.warn(f"logging.{name}=true but {name} is not installed; skipped", stacklevel=2)
            continue
        names.append(name)
    return names


def flat_config(config: Config) -> dict[str, Any]:
    """``{"optim.lr": 1e-4, ...}`` with scalar values (lists and None as strings), for trackers."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(node, (int, float, str, bool)):
            out[prefix[:-1]] = node
        else:
            out[prefix[:-1]] = str(node)

    walk("", config.to_dict())
    return out


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of ``metrics.jsonl`` (empty when there is none); a torn last line (a run
    stopped in the middle of writing it) is dropped. ``TrainingError`` for a damaged line
    elsewhere, with its number."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif i < len(lines) - 1 and any(x.strip() for x in lines[i + 1 :]):
            raise TrainingError(
                f"{path}:{i + 1} is not a JSON record ({line[:60]!r}); delete that line"
            )
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and forwards them to accelerate's trackers.

    On resume from step ``start_step``, records after that step (written by the killed run after
    its last checkpoint) are dropped, so the file reads as one uninterrupted run.
    """

    def __init__(self, accelerator: Any, config: Config, start_step: int) -> None:
        self.accelerator = accelerator
        self.path = Path(config.train.output_dir) / METRICS_FILE
        self.enabled = accelerator.is_main_process and config.logging.jsonl
        self.last_step = start_step
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= start_step]
            if start_step == 0:
                kept = []
            with disk_errors(self.path, "the checkpoints are intact"):
                _replace(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        if accelerator.log_with:
            accelerator.init_trackers(config.logging.project, config=flat_config(config))

    def log(self, record: dict[str, Any], step: int) -> None:
        record = {"step": step, **{k: _clean(v) for k, v in record.items()}}
        if self.enabled:
            kept = f"records up to step {self.last_step} and the checkpoints are intact"
            with disk_errors(self.path, kept), self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            self.last_step = step
        numeric = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.accelerator.log_with:
            self.accelerator.log(numeric, step=step)

    def close(self) -> None:
        if self.accelerator.log_with:
            self.accelerator.end_training()


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file, fsynced, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: they become strings ``"nan"``/``"inf"``/``"-inf"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value

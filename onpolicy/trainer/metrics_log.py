"""Metrics out: one JSON object per line in ``<output_dir>/metrics.jsonl``, and accelerate's
trackers (TensorBoard; W&B and trackio when installed). Only the main process writes."""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path
from typing import Any

from onpolicy.config import Config, LoggingConfig

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
    """Every record of ``metrics.jsonl`` (empty when there is none)."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and forwards them to accelerate's trackers.

    On resume from step ``start_step``, records after that step (written by the killed run after
    its last checkpoint) are dropped, so the file reads as one uninterrupted run.
    """

    def __init__(self, accelerator: Any, config: Config, start_step: int) -> None:
        self.accelerator = accelerator
        self.path = Path(config.train.output_dir) / METRICS_FILE
        self.enabled = accelerator.is_main_process and config.logging.jsonl
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= start_step]
            if start_step == 0:
                kept = []
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        if accelerator.log_with:
            accelerator.init_trackers(config.logging.project, config=flat_config(config))

    def log(self, record: dict[str, Any], step: int) -> None:
        record = {"step": step, **{k: _clean(v) for k, v in record.items()}}
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        numeric = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.accelerator.log_with:
            self.accelerator.log(numeric, step=step)

    def close(self) -> None:
        if self.accelerator.log_with:
            self.accelerator.end_training()


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: they become strings ``"nan"``/``"inf"``/``"-inf"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value

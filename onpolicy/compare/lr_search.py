"""Fair step sizes: each method's learning rate chosen from a small grid on the validation split
carved from the training prompts (``training.split_prompts``), never on the reported held-out split.

    lr_search:
      grid: [1.0e-4, 3.0e-4, 1.0e-3]   # learning rates to try
      steps: 100                       # optimizer steps per trial (default: train.steps)
      methods: [reverse_kl, gkd]       # default: every trained method

Every (method, start point) runs one trial per grid value with the first seed, from the start
point it will train from; the value with the best validation score wins (lowest KL per token to
the teacher when the task has no score; ties go to the smaller rate). All seeds then train with
it; the report gives the chosen value and every trial's validation metric. Trials are not counted
in the methods' FLOPs (they are the cost of choosing, the same for every method of the grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onpolicy.errors import ConfigError, check_known_keys

_KEYS = {"grid", "steps", "methods"}


@dataclass(frozen=True)
class LRSearchSpec:
    """The ``lr_search`` block (see the module docstring)."""

    grid: tuple[float, ...]
    steps: int | None = None
    methods: tuple[str, ...] | None = None


def parse_lr_search(raw: dict[str, Any] | None, method_names: Sequence[str]) -> LRSearchSpec | None:
    """Validate the ``lr_search`` block (one-line errors); None when absent."""
    if not raw:
        return None
    raw = dict(raw)
    check_known_keys("lr_search", raw, _KEYS)
    try:
        grid = tuple(sorted({float(x) for x in raw.get("grid") or ()}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lr_search.grid must be a list of numbers; got {raw['grid']!r}") from exc
    if len(grid) < 2 or min(grid) <= 0:
        raise ConfigError(
            f"lr_search.grid needs >= 2 positive rates, e.g. [1e-4, 3e-4, 1e-3]; got {grid}"
        )
    methods = raw.get("methods")
    if methods is not None:
        methods = tuple(methods)
        unknown = sorted(set(methods) - set(method_names))
        if unknown:
            raise ConfigError(
                f"lr_search.methods has {unknown}, not among the methods {list(method_names)}"
            )
    steps = raw.get("steps")
    if steps is not None and int(steps) < 1:
        raise ConfigError(f"lr_search.steps={steps}; use an int >= 1")
    return LRSearchSpec(grid, None if steps is None else int(steps), methods)


def validation_value(metrics: dict[str, float]) -> float:
    """Higher is better: the validation score, else minus the KL per token, else minus the
    teacher's NLL per byte (``-inf`` when the trial logged none of them)."""
    if "eval/score" in metrics:
        return metrics["eval/score"]
    for key in ("eval/kl_per_token", "eval/teacher_nll_per_byte"):
        if key in metrics:
            return -metrics[key]
    return float("-inf")


def choose(trials: Sequence[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """``{(method, start): lr}``: per method and start point, the best trial (smaller rate on a
    tie). ``trials``: the records of ``training.lr_trial``."""
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for t in sorted(trials, key=lambda t: t["lr"]):
        key, value = (t["method"], t["start"]), validation_value(t["metrics"])
        if key not in best or value > best[key][1]:
            best[key] = (t["lr"], value)
    return {k: lr for k, (lr, _) in best.items()}

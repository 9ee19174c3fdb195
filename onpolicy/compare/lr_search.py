"""Fair step sizes: each method's learning rate chosen from a small grid on the validation split
carved from the training prompts (``training.split_prompts``), never on the reported held-out split.

    lr_search:
      grid: [1.0e-4, 3.0e-4, 1.0e-3]   # learning rates to try
      steps: 100                       # optimizer steps per trial (default: train.steps)
      methods: [reverse_kl, gkd]       # default: every trained method
      criterion: auto                  # auto | score | kl | forward_nll

Every (method, start point) runs one trial per grid value with the first seed, from the start
point it will train from; the value with the best validation score wins (lowest KL per token to
the teacher when the task has no score; ties go to the smaller rate). ``criterion`` names the
validation value instead: ``score``, ``kl`` (KL(student || teacher) per token of the student's own
completions) or ``forward_nll`` (the student's NLL per byte of teacher samples of the validation
prompts, as ``eval.forward_nll``; the trials draw that pool themselves). Use ``forward_nll`` on
open-ended tasks without a score: a student that collapses into repetition loops the teacher also
finds likely lowers the reverse KL of its own completions, so ``kl`` (and ``auto`` there) can
choose the collapsing rate; it cannot lower the NLL of the teacher's samples (measured on the
SmolLM2 pair, ``docs/results/real-pair-lr.md``). All seeds then train with
it; the report gives the chosen value and every trial's validation metric. Trials are not counted
in the methods' FLOPs (they are the cost of choosing, the same for every method of the grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onpolicy.errors import ConfigError, check_known_keys

_KEYS = {"grid", "steps", "methods", "criterion"}
CRITERIA = ("auto", "score", "kl", "forward_nll")
_CRITERION_KEY = {
    "score": "eval/score",
    "kl": "eval/kl_per_token",
    "forward_nll": "eval/forward_nll_per_byte",
}


@dataclass(frozen=True)
class LRSearchSpec:
    """The ``lr_search`` block (see the module docstring)."""

    grid: tuple[float, ...]
    steps: int | None = None
    methods: tuple[str, ...] | None = None
    criterion: str = "auto"


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
    criterion = str(raw.get("criterion", "auto"))
    if criterion not in CRITERIA:
        raise ConfigError(f"lr_search.criterion={criterion!r}; use one of {list(CRITERIA)}")
    return LRSearchSpec(grid, None if steps is None else int(steps), methods, criterion)


def validation_value(metrics: dict[str, float], criterion: str = "auto") -> float:
    """Higher is better. ``auto``: the validation score, else minus the KL per token, else minus
    the teacher's NLL per byte; another criterion: that value alone (score, or minus the KL per
    token / the forward NLL per byte). ``-inf`` when the trial logged none of them."""
    if criterion != "auto":
        key = _CRITERION_KEY[criterion]
        if key not in metrics:
            return float("-inf")
        return metrics[key] if criterion == "score" else -metrics[key]
    if "eval/score" in metrics:
        return metrics["eval/score"]
    for key in ("eval/kl_per_token", "eval/teacher_nll_per_byte"):
        if key in metrics:
            return -metrics[key]
    return float("-inf")


def choose(
    trials: Sequence[dict[str, Any]], criterion: str = "auto"
) -> dict[tuple[str, str], float]:
    """``{(method, start): lr}``: per method and start point, the best trial (smaller rate on a
    tie). ``trials``: the records of ``training.lr_trial``."""
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for t in sorted(trials, key=lambda t: t["lr"]):
        key, value = (t["method"], t["start"]), validation_value(t["metrics"], criterion)
        if key not in best or value > best[key][1]:
            best[key] = (t["lr"], value)
    return {k: lr for k, (lr, _) in best.items()}

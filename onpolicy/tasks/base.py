"""The task interface: prompts, optional reference answers, and a scoring function.

A task is what the comparison harness trains on and evaluates with. Built-in tasks register a
factory under a name (``task.name`` in config); a user's own task is a dataset file in the one
data format of ``onpolicy.data`` plus a metric name (see ``onpolicy.tasks.dataset``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from onpolicy.errors import ConfigError
from onpolicy.types import Prompt, ScoreFn


@dataclass(frozen=True)
class Task:
    """A distillation task.

    Attributes:
        name: registry name (for reports).
        train_prompts: prompts the methods train on (rollouts, teacher samples).
        eval_prompts: held-out prompts every method is evaluated on (never trained on).
        score: per-completion metric in [0, 1], or None when the task has no metric (then reports
            show only the KL to the teacher and the agreement with the teacher's greedy answers).
        metric_name: what ``score`` measures (column title in reports).
        train_references: whether ``train_prompts[i].reference`` holds a gold completion that a
            supervised baseline may train on (the dataset of supervised KD / pre-training).
    """

    name: str
    train_prompts: tuple[Prompt, ...]
    eval_prompts: tuple[Prompt, ...]
    score: ScoreFn | None = None
    metric_name: str = "score"
    train_references: bool = False

    def __post_init__(self) -> None:
        if not self.train_prompts or not self.eval_prompts:
            raise ConfigError(
                f"task {self.name!r} has {len(self.train_prompts)} train and "
                f"{len(self.eval_prompts)} eval prompts; both must be non-empty"
            )

    def mean_score(self, texts: Sequence[str], prompts: Sequence[Prompt]) -> float | None:
        """Mean of ``score`` over paired completions and prompts (None without a metric)."""
        if self.score is None:
            return None
        if not texts:
            return 0.0
        return sum(self.score(t, p) for t, p in zip(texts, prompts, strict=True)) / len(texts)


TaskFactory = Callable[..., Task]
TASKS: dict[str, TaskFactory] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a task factory under ``name``; its keyword arguments are the config block's keys."""

    def wrap(factory: TaskFactory) -> TaskFactory:
        TASKS[name] = factory
        return factory

    return wrap


def make_task(name: str, **kwargs: Any) -> Task:
    """Build the task registered as ``name`` (built-ins: arithmetic, chat_pair, dataset)."""
    import onpolicy.tasks  # noqa: F401  (registers the built-ins)

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; use one of {sorted(TASKS)}")
    _check_options(name, TASKS[name], kwargs)
    return TASKS[name](**kwargs)


def _check_options(name: str, factory: TaskFactory, kwargs: dict[str, Any]) -> None:
    """One line per bad config: the first unknown key alone, with the closest option."""
    import difflib
    import inspect

    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    options = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in options:
            close = difflib.get_close_matches(key, options, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"task.{key} is not an option of task {name!r}; {hint}options: {options}"
            )
    missing = [n for n, p in params.items() if p.default is p.empty and n not in kwargs]
    if missing:
        raise ConfigError(f"task {name!r} needs task.{missing[0]}; options: {options}")

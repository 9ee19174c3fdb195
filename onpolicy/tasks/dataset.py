"""A user's own task from config: the one data format of ``onpolicy.data`` and a metric.

    task: {name: dataset, path: data/train.jsonl, eval_path: data/eval.jsonl, metric: exact_match}

Rows: ``{"prompt": ...}`` or ``{"messages": [...]}`` with the gold ``"completion"`` (or
``"reference"``, the same field); ``chat: true`` renders a plain prompt as one user message.
Held-out prompts: ``eval_path`` when given, else ``eval_fraction`` of ``path`` split at random.
Metrics: ``onpolicy.metrics`` (``exact_match``, ``contains``, ``none``, or ``file.py:function``).
"""

from __future__ import annotations

from pathlib import Path

from onpolicy.config import DataConfig
from onpolicy.data import held_out_split, read_prompts
from onpolicy.errors import ConfigError, DataError
from onpolicy.metrics import METRICS, contains, exact_match, needs_reference, resolve_metric
from onpolicy.tasks.base import Task, register_task

__all__ = ["METRICS", "chat_pair_task", "contains", "dataset_task", "exact_match", "resolve_metric"]


@register_task("dataset")
def dataset_task(
    path: str,
    metric: str = "none",
    eval_path: str | None = None,
    eval_fraction: float = 0.25,
    seed: int = 0,
    chat: bool = False,
    name: str = "dataset",
) -> Task:
    """A task from a dataset file (``onpolicy.data``); held-out prompts from ``eval_path``, else a
    seeded random ``eval_fraction`` of ``path``. Gold completions are available to the supervised
    methods (``train_references``) when every training row has one."""
    score = resolve_metric(metric)  # a bad metric is reported before any file is read
    data = DataConfig(path=path, eval_path=eval_path, chat=chat)
    prompts = read_prompts(path, data)
    if eval_path is not None:
        train, held_out = prompts, read_prompts(eval_path, data)
    else:
        if not 0.0 < eval_fraction < 1.0:
            raise ConfigError(f"task.eval_fraction={eval_fraction}; use a value in (0, 1)")
        n_eval = max(1, round(eval_fraction * len(prompts)))
        train, held_out = held_out_split(prompts, n_eval, seed, where=str(path))
    if needs_reference(metric) and any(p.reference is None for p in held_out):
        raise DataError(
            f"metric {metric!r} needs a `completion` on every held-out row of "
            f"{eval_path or path}"
        )
    return Task(
        name=name,
        train_prompts=tuple(train),
        eval_prompts=tuple(held_out),
        score=score,
        metric_name=metric,
        train_references=all(p.reference is not None for p in train),
    )


@register_task("chat_pair")
def chat_pair_task(eval_fraction: float = 0.25, seed: int = 0) -> Task:
    """The shipped questions (``data/chat_prompts.jsonl``) for the SmolLM2 / Gemma-3 pair: short
    instructions and simple questions with one-word references, metric ``contains``."""
    path = Path(__file__).parent / "data" / "chat_prompts.jsonl"
    return dataset_task(
        str(path), "contains", eval_fraction=eval_fraction, seed=seed, chat=True, name="chat_pair"
    )

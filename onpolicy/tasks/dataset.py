"""A user's own task from config: a JSONL file of prompts (+ optional references) and a metric.

Each line: ``{"prompt": "..."}`` (or ``{"messages": [...]}``), optionally ``"reference": "..."``.
Metrics: ``exact_match`` (normalized string equality), ``contains`` (the reference appears in the
completion), ``none`` (KL and teacher agreement only), or ``"package.module:function"`` (a function
``(completion_text, prompt) -> float`` in [0, 1]).
"""

from __future__ import annotations

import importlib
import json
import random
from pathlib import Path

from onpolicy.errors import ConfigError, DataError
from onpolicy.tasks.base import ScoreFn, Task, register_task
from onpolicy.types import Prompt


def _normalize(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".!").split())


def exact_match(completion: str, prompt: Prompt) -> float:
    """1.0 when the completion equals the reference after lower-casing and whitespace folding."""
    return float(
        prompt.reference is not None and _normalize(completion) == _normalize(prompt.reference)
    )


def contains(completion: str, prompt: Prompt) -> float:
    """1.0 when the (normalized) reference appears in the (normalized) completion."""
    return float(
        prompt.reference is not None and _normalize(prompt.reference) in _normalize(completion)
    )


METRICS: dict[str, ScoreFn] = {"exact_match": exact_match, "contains": contains}


def resolve_metric(metric: str) -> ScoreFn | None:
    """A built-in metric by name, ``none``, or a ``module:function`` import path."""
    if metric == "none":
        return None
    if metric in METRICS:
        return METRICS[metric]
    if ":" not in metric:
        raise ConfigError(
            f"unknown metric {metric!r}; use one of {[*METRICS, 'none']} or "
            "'package.module:function'"
        )
    module, func = metric.split(":", 1)
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"metric {metric!r} cannot be imported ({exc}); check the path") from exc


def load_prompts(path: str | Path, chat: bool = True) -> list[Prompt]:
    """Prompts from a JSONL file; ``chat`` wraps a plain ``prompt`` as one user message."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"task file {str(path)!r} does not exist; give a JSONL file of prompts")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not JSON ({exc.msg}); one object per line") from exc
        ref = row.get("reference")
        if "messages" in row:
            out.append(Prompt(messages=tuple(row["messages"]), reference=ref))
        elif "prompt" in row:
            text = str(row["prompt"])
            out.append(
                Prompt(messages=({"role": "user", "content": text},), reference=ref)
                if chat
                else Prompt(text=text, reference=ref)
            )
        else:
            raise DataError(f"{path}:{n}: needs a 'prompt' or 'messages' key; got {sorted(row)}")
    return out


@register_task("dataset")
def dataset_task(
    path: str,
    metric: str = "none",
    eval_fraction: float = 0.25,
    seed: int = 0,
    chat: bool = True,
    name: str = "dataset",
) -> Task:
    """A task from a JSONL file, split at random (``seed``) into train and held-out prompts."""
    if not 0.0 < eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction={eval_fraction}; use a value in (0, 1)")
    prompts = load_prompts(path, chat)
    if len(prompts) < 2:
        raise DataError(f"task file {path} has {len(prompts)} prompts; need at least 2")
    score = resolve_metric(metric)
    if score is not None and any(p.reference is None for p in prompts):
        raise DataError(f"metric {metric!r} needs a 'reference' on every row of {path}")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(eval_fraction * len(prompts)))
    return Task(
        name=name,
        train_prompts=tuple(prompts[i] for i in order[n_eval:]),
        eval_prompts=tuple(prompts[i] for i in order[:n_eval]),
        score=score,
        metric_name=metric,
    )


@register_task("chat_pair")
def chat_pair_task(eval_fraction: float = 0.25, seed: int = 0) -> Task:
    """The shipped questions (``data/chat_prompts.jsonl``) for the SmolLM2 / Gemma-3 pair: short
    instructions and simple questions with one-word references, metric ``contains``."""
    path = Path(__file__).parent / "data" / "chat_prompts.jsonl"
    return dataset_task(path, "contains", eval_fraction, seed, chat=True, name="chat_pair")

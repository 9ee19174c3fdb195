"""Task metrics: ``score(completion_text, prompt) -> float`` in [0, 1], against ``prompt.reference``
(the row's gold ``completion``).

A metric is named in config (``eval.metric`` in ``onpolicy train``, ``task.metric`` in the harness):

- ``exact_match``: the completion equals the reference after lower-casing, whitespace folding and
  dropping a final ``.``/``!``;
- ``contains``: the (normalized) reference appears in the (normalized) completion;
- ``none``: no metric;
- ``path/to/file.py:function``: a function in a local Python file the user names (relative to the
  config's folder or the working directory). Only a file path is accepted, never a module name:
  nothing is imported from the environment on a config's say-so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from onpolicy.errors import ConfigError
from onpolicy.types import Prompt

ScoreFn = Callable[[str, Prompt], float]


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


def needs_reference(metric: str) -> bool:
    """Whether the metric ``metric`` compares with a reference (the built-ins do)."""
    return metric in METRICS


def check_metric(metric: str, base_dir: Path | None = None) -> None:
    """A ``ConfigError`` for a metric name that is neither built in nor an existing file's
    ``file.py:function`` (checked before any model loads; the file is not run here)."""
    if metric != "none" and metric not in METRICS:
        _locate(metric, base_dir)


def resolve_metric(metric: str, base_dir: Path | None = None) -> ScoreFn | None:
    """The function named by ``metric`` (see the module docstring); None for ``none``."""
    if metric == "none":
        return None
    if metric in METRICS:
        return METRICS[metric]
    path, func = _locate(metric, base_dir)
    spec = importlib.util.spec_from_file_location(f"onpolicy_metric_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py path always has a loader
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(f"metric file {str(path)!r} failed to load: {exc!r}") from exc
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ConfigError(f"metric file {str(path)!r} has no function {func!r}")
    return fn


def _locate(metric: str, base_dir: Path | None) -> tuple[Path, str]:
    file, sep, func = metric.rpartition(":")
    if not sep or not file.endswith(".py") or not func:
        raise ConfigError(
            f"unknown metric {metric!r}; use one of {[*METRICS, 'none']} or "
            "'path/to/file.py:function' (a function in a local Python file)"
        )
    path = Path(file).expanduser()
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"metric file {file!r} does not exist; give a path to a .py file")
    return path, func

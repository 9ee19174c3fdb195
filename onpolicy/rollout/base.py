"""The rollout-backend interface: every backend (``hf``, ``vllm``, ``vllm-server``) returns a
``Rollout``.

A backend samples the *student's* completions for prompts already rendered with the student's chat
template (token ids), and receives the student's new weights after optimizer steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from onpolicy.types import Prompt, Rollout, SamplingParams


class RolloutBackend(Protocol):
    """Samples student completions (``onpolicy.rollout.hf``, ``onpolicy.rollout.vllm_*``)."""

    def generate(
        self,
        prompt_ids_B: Sequence[Sequence[int]],
        sampling: SamplingParams,
        prompts: Sequence[Prompt] | None = None,
    ) -> Rollout:
        """Sample ``sampling.n`` completions per prompt; rows of the result are prompt-major."""
        ...

    def sync_weights(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """Make the backend sample from ``model``'s current weights; returns metrics."""
        ...

    def close(self) -> None:
        """Free the backend's resources (engine, server connection)."""
        ...


def check_prompt_count(
    prompt_ids_B: Sequence[Sequence[int]], prompts: Sequence[Prompt] | None
) -> None:
    """``ValueError`` unless ``prompts`` (when given) pairs one-to-one with ``prompt_ids_B``."""
    if prompts is not None and len(prompts) != len(prompt_ids_B):
        raise ValueError(f"{len(prompts)} prompts for {len(prompt_ids_B)} rendered prompts")


def timing_metrics(completion_ids_B: Sequence[Sequence[int]], seconds: float) -> dict[str, float]:
    """The metrics every backend reports for one ``generate``: ``rollout/seconds``,
    ``rollout/tokens`` (completion tokens) and ``rollout/tokens_per_second``."""
    n_tokens = sum(len(c) for c in completion_ids_B)
    return {
        "rollout/seconds": seconds,
        "rollout/tokens": float(n_tokens),
        "rollout/tokens_per_second": n_tokens / max(seconds, 1e-9),
    }


def close_all(things: list[Any]) -> None:
    """``close()`` each distinct object that has one, every one even when an earlier one fails
    (the first error is raised after)."""
    seen: set[int] = set()
    first: BaseException | None = None
    for thing in things:
        close = getattr(thing, "close", None)
        if close is None or id(thing) in seen:
            continue
        seen.add(id(thing))
        try:
            close()
        except Exception as exc:  # the others must still be closed
            first = first or exc
    if first is not None:
        raise first


BackendFactory = Callable[..., RolloutBackend]
ROLLOUT_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a backend factory under ``name`` (the config's ``rollout.backend``)."""

    def wrap(factory: BackendFactory) -> BackendFactory:
        ROLLOUT_BACKENDS[name] = factory
        return factory

    return wrap


def make_backend(name: str, **kwargs: Any) -> RolloutBackend:
    """Build the backend registered as ``name``; backends with heavy imports register lazily."""
    if name not in ROLLOUT_BACKENDS:
        _import_builtin(name)
    if name not in ROLLOUT_BACKENDS:
        known = sorted({*ROLLOUT_BACKENDS, "hf", "vllm", "vllm-server"})
        raise ValueError(f"unknown rollout backend {name!r}; use one of {known}")
    return ROLLOUT_BACKENDS[name](**kwargs)


def _import_builtin(name: str) -> None:
    """Import the module of a built-in backend (so optional libraries load only when asked)."""
    import importlib

    module = {
        "hf": "onpolicy.rollout.hf",
        "vllm": "onpolicy.rollout.vllm_engine",
        "vllm-server": "onpolicy.rollout.vllm_server",
    }.get(name)
    if module is not None:
        importlib.import_module(module)

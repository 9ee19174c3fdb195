"""A task reward next to the distillation signal (``reward:`` in config; the ``policy_gradient``
objective).

Per completion token ``y_t`` of row ``b`` (a sample of prompt ``i``), the advantage is

    kl_coef * (log p_teacher(y_t) - log p_student(y_t))  +  coef * A_b
    A_b = (r_b - mean_i r) / (std_i r + 1e-6)     (normalize: std)
    A_b =  r_b - mean_i r                         (normalize: center)

with ``r_b = function(completion_text, prompt)``, ``mean_i`` / ``std_i`` (population) over the
``rollout.n`` samples of prompt ``i`` (a group whose samples all score the same gets 0): the
GRPO-style group baseline that ms-swift, slime and NeMo-RL add to the teacher's log-ratio.
``function`` is a built-in metric (``exact_match``, ``contains``) or ``path/to/file.py:function``
in a local file, checked before any model loads (the file is parsed, not run).

Stability (docs/results/custom-loop.md): at ``kl_coef`` 1.0 the teacher's log-ratio drowns the task
reward and the student collapsed on one task; ``kl_coef`` 0.1, ``normalize: std``,
``advantage_norm: batch`` and lr 3e-4 ended no run collapsed (``configs/pg_task_reward.yaml``).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from onpolicy.errors import ConfigError
from onpolicy.types import Prompt, Rollout

TaskFn = Callable[[str, Prompt], float]


def group_advantages(
    rewards: Sequence[float], prompt_index_B: Sequence[int], scale: bool, eps: float = 1e-6
) -> list[float]:
    """Each reward minus the mean reward of its prompt's samples; divided by their (population)
    standard deviation + ``eps`` too when ``scale`` (a group whose samples all agree gets 0)."""
    groups: dict[int, list[float]] = {}
    for r, i in zip(rewards, prompt_index_B, strict=True):
        groups.setdefault(i, []).append(float(r))
    stats = {}
    for i, g in groups.items():
        t = torch.tensor(g, dtype=torch.float64)
        stats[i] = (float(t.mean()), float(t.std(unbiased=False)))
    out = []
    for r, i in zip(rewards, prompt_index_B, strict=True):
        mean, std = stats[i]
        out.append((float(r) - mean) / (std + eps) if scale else float(r) - mean)
    return out


@dataclass
class TaskReward:
    """``rollout -> coef * A_b`` per row (see the module docstring): the ``reward_fn`` of the
    ``policy_gradient`` objective. ``scores`` gives the raw rewards, ``advantages`` their group
    normalization, so a caller that logs the raw rewards computes them once."""

    function: TaskFn
    coef: float = 1.0
    normalize: Literal["std", "center"] = "std"

    def scores(self, rollout: Rollout) -> list[float]:
        """``function(text, prompt)`` of every row."""
        return [
            float(self.function(text, rollout.prompts[i]))
            for text, i in zip(rollout.texts_B, rollout.prompt_index_B, strict=True)
        ]

    def advantages(self, scores: Sequence[float], rollout: Rollout) -> list[float]:
        """``coef * A_b`` of each row from its raw reward."""
        a = group_advantages(scores, rollout.prompt_index_B, scale=self.normalize == "std")
        return [self.coef * x for x in a]

    def __call__(self, rollout: Rollout) -> list[float]:
        return self.advantages(self.scores(rollout), rollout)


def check_reward_function(spec: str, base_dir: Path | None = None) -> None:
    """A ``ConfigError`` unless ``spec`` is a built-in metric or a local ``file.py:function`` whose
    file defines ``function`` at its top level (the file is parsed, never run, here)."""
    from onpolicy.metrics import METRICS, _locate

    if spec in METRICS:
        return
    try:
        path, name = _locate(spec, base_dir)
    except ConfigError as exc:
        raise ConfigError(f"reward.function: {exc}") from exc
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise ConfigError(f"reward.function: {str(path)!r} is not valid Python ({exc})") from exc
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}  # fmt: skip
    if name not in defined:
        raise ConfigError(
            f"reward.function: {str(path)!r} defines no function {name!r} at its top level "
            f"(found: {sorted(defined)[:8]}); name a function (completion_text, prompt) -> float"
        )


def build_task_reward(
    spec: str, coef: float, normalize: Literal["std", "center"], base_dir: Path | None = None
) -> TaskReward:
    """The ``TaskReward`` of ``reward.function`` (its file loaded now)."""
    from onpolicy.metrics import resolve_metric

    check_reward_function(spec, base_dir)
    fn = resolve_metric(spec, base_dir)
    assert fn is not None  # "none" is not a reward (checked)
    return TaskReward(function=fn, coef=coef, normalize=normalize)


def check_reward_config(config, base_dir: Path | None = None) -> None:
    """``reward:`` checked before any model loads: the function exists, the objective is the
    sampled-token one, each prompt has a group of samples to centre on, ``coef`` is > 0."""
    r = config.reward
    check_reward_function(r.function, base_dir)
    if config.objective.name != "policy_gradient":
        raise ConfigError(
            f"reward.function is set but objective.name={config.objective.name!r}; the task "
            "reward joins the sampled-token advantage: use objective policy_gradient"
        )
    if config.rollout.n < 2:
        raise ConfigError(
            f"reward.function needs rollout.n >= 2 (got {config.rollout.n}): the reward is "
            "centred on the other samples of the same prompt; e.g. rollout.n=4"
        )
    if not r.coef > 0:
        raise ConfigError(f"reward.coef={r.coef} must be > 0 (or drop reward.function)")

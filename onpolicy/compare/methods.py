"""The methods the harness compares and the one explicit loop that trains each of them.

Every method starts from the same student folder, uses the same optimizer (AdamW, constant learning
rate, gradient clipping), the same number of optimizer steps and the same prompts per step; only
where completions come from and what loss they get differs (the objective). The loop reads top to
bottom: prompts -> completions (student rollout | teacher samples | references) -> teacher scores ->
loss -> step, and counts the compute it spends.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from onpolicy.errors import ConfigError
from onpolicy.types import Prompt, Rollout, SamplingParams

StudentKind = Literal["same", "cross"]


@dataclass(frozen=True)
class MethodSpec:
    """One row of the comparison.

    Attributes:
        name: the row's name in reports.
        objective: a registered objective name, ``none`` (the untouched student) or ``trl_sft``
            (the SFT baseline through TRL's ``SFTTrainer``).
        params: the objective's keyword arguments.
        student: ``same`` (the student sharing the teacher's tokenizer) or ``cross`` (the student
            with its own tokenizer).
        dataset: where ``dataset``-sourced batches come from: ``teacher`` (fixed teacher samples,
            one per prompt, drawn once) or ``reference`` (the task's reference completions).
    """

    name: str
    objective: str
    params: dict[str, Any] = field(default_factory=dict)
    student: StudentKind = "same"
    dataset: Literal["teacher", "reference"] = "teacher"


BUILTIN_METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        MethodSpec("untouched", "none"),
        MethodSpec("untouched_cross", "none", student="cross"),
        MethodSpec("sft", "sft"),
        MethodSpec("trl_sft", "trl_sft"),
        MethodSpec("supervised_kd", "supervised_kd"),
        MethodSpec("reverse_kl", "reverse_kl"),
        MethodSpec("gkd", "gkd", {"lmbda": 0.5, "beta": 0.5, "off_policy": "teacher"}),
        MethodSpec("policy_gradient", "policy_gradient"),
        MethodSpec("sft_cross", "sft", student="cross"),
        MethodSpec("gold", "gold", student="cross"),
        MethodSpec("uld", "uld", student="cross"),
    )
}


def method_spec(entry: str | dict[str, Any]) -> MethodSpec:
    """A built-in method by name, or a dict ``{name, objective, params, student, dataset}``."""
    if isinstance(entry, str):
        if entry not in BUILTIN_METHODS:
            raise ConfigError(
                f"unknown method {entry!r}; use one of {sorted(BUILTIN_METHODS)} "
                "or a dict with name/objective/params/student"
            )
        return BUILTIN_METHODS[entry]
    base = BUILTIN_METHODS.get(entry.get("name", ""))
    merged = {**(vars(base) if base else {}), **entry}
    if "name" not in merged or "objective" not in merged:
        raise ConfigError(f"method {entry!r} needs a 'name' and an 'objective'")
    return MethodSpec(**merged)


@dataclass
class TrainSettings:
    """The budget every method gets (same for all)."""

    steps: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    max_new_tokens: int = 48
    temperature: float = 1.0


@dataclass
class Budget:
    """Compute a method spent (tokens = positions through a forward pass; FLOPs estimated as
    ``6 N`` per trained token and ``2 N`` per inference token, ``N`` = the model's parameters)."""

    student_train_tokens: int = 0
    student_gen_tokens: int = 0
    teacher_tokens: int = 0
    seconds: float = 0.0

    def flops(self, student_params: int, teacher_params: int) -> float:
        return (
            6.0 * student_params * self.student_train_tokens
            + 2.0 * student_params * self.student_gen_tokens
            + 2.0 * teacher_params * self.teacher_tokens
        )


@dataclass
class Models:
    """What a method run needs: the student it trains, the teacher, their tokenizers."""

    student: torch.nn.Module
    student_tok: Any
    teacher: torch.nn.Module
    teacher_tok: Any


class TeacherSamples:
    """Fixed teacher samples: one completion per prompt, sampled the first time it is asked for
    and reused after (sequence-level KD's dataset); counts the teacher tokens it spends."""

    def __init__(self, models: Models, sampling: SamplingParams, budget: Budget) -> None:
        from onpolicy.rollout.base import make_backend

        self.backend = make_backend("hf", model=models.teacher, tokenizer=models.teacher_tok)
        self.tok, self.sampling, self.budget = models.teacher_tok, sampling, budget
        self.cache: dict[Prompt, str] = {}

    def texts(self, prompts: Sequence[Prompt]) -> list[str]:
        from onpolicy.api import rollout

        missing = list(dict.fromkeys(p for p in prompts if p not in self.cache))
        if missing:
            with torch.no_grad():
                ro = rollout(self.backend, missing, self.tok, self.sampling)
            self.budget.teacher_tokens += _gen_positions(ro)
            self.cache.update(zip(missing, ro.texts_B, strict=True))
        return [self.cache[p] for p in prompts]


def _gen_positions(ro: Rollout) -> int:
    """Positions a KV-cached generation processes: the prompt once, then one per new token."""
    return sum(len(p) + len(c) for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True))


def train_method(
    spec: MethodSpec,
    models: Models,
    train_prompts: Sequence[Prompt],
    settings: TrainSettings,
    seed: int,
) -> tuple[Budget, list[float]]:
    """Train ``models.student`` in place with ``spec``'s objective; returns budget and losses."""
    from onpolicy.api import completion_rollout, loss, make_objective, rollout, step
    from onpolicy.rollout.base import make_backend
    from onpolicy.teacher.local import LocalTeacher

    budget, losses = Budget(), []
    if spec.objective == "none":
        return budget, losses
    objective = make_objective(spec.objective, **spec.params)
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    sampling = SamplingParams(
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature
    )
    backend = make_backend("hf", model=models.student, tokenizer=models.student_tok)
    teacher_samples = TeacherSamples(models, sampling, budget)
    scorer = LocalTeacher(models.teacher, models.teacher_tok, models.student_tok, mode="auto")
    optimizer = torch.optim.AdamW(models.student.parameters(), lr=settings.lr, weight_decay=0.0)
    models.student.train()
    for step_i in range(settings.steps):
        prompts = rng.sample(list(train_prompts), min(settings.batch_size, len(train_prompts)))
        source = objective.batch_source(step_i)
        if source == "student":  # on-policy: the student's own samples
            with torch.no_grad():
                ro = rollout(backend, prompts, models.student_tok, sampling)
            budget.student_gen_tokens += _gen_positions(ro)
        elif source == "teacher" or spec.dataset == "teacher":
            ro = completion_rollout(prompts, teacher_samples.texts(prompts), models.student_tok)
        else:
            _require_references(prompts, spec.name)
            ro = completion_rollout(prompts, [p.reference for p in prompts], models.student_tok)
        scores = scorer.score(ro) if objective.needs_teacher else None
        if scores is not None:
            budget.teacher_tokens += _teacher_positions(ro, scores)
        out = loss(objective, models.student, ro, scores)
        budget.student_train_tokens += sum(
            len(p) + len(c) for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True)
        )
        metrics = step(optimizer, out, model=models.student, max_grad_norm=settings.max_grad_norm)
        backend.sync_weights(models.student, step_i + 1)
        losses.append(metrics["loss"])
    models.student.eval()
    budget.seconds = time.perf_counter() - start
    return budget, losses


def _teacher_positions(ro: Rollout, scores: Any) -> int:
    cross = getattr(scores, "cross", None)
    if cross is not None:
        return sum(
            len(p) + len(c) for p, c in zip(cross.prompt_ids_B, cross.completion_ids_B, strict=True)
        )
    return sum(len(p) + len(c) for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True))


def _require_references(prompts: Sequence[Prompt], name: str) -> None:
    if any(p.reference is None for p in prompts):
        raise ConfigError(
            f"method {name!r} uses dataset=reference but the task's prompts have no "
            "reference; set dataset: teacher"
        )

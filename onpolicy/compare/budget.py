"""How the comparison matches the methods' budgets: equal optimizer steps (the default) or equal
estimated training FLOPs (``budget: {match: flops, ...}`` in the compare config).

At equal FLOPs each method gets the number of optimizer steps that its estimated FLOPs fit in the
budget, planned before any training. The estimate counts what the trainer's ``ComputeBudget``
records (``flops = 6 N_s * trained positions + 2 N_s * generated positions + 2 N_t * teacher
positions``), step by step from the objective's own ``batch_source(step)`` and ``needs_teacher``:

- every trained row: ``6 N_s (P_s + C)`` (the student's training forward and backward);
- an on-policy step (source ``student``): + ``2 N_s (P_s + C)`` per row (the student's rollout);
- an objective with teacher scores: + ``2 N_t (P_t + q C)`` per row (the teacher's scoring forward);
- with ``teacher_data: paid`` (the default), each distinct teacher sample a method trains on:
  ``2 N_t (P_t + q C)``, charged at the step that first uses it (one fixed teacher sample per
  training prompt; at most one per distinct prompt); with ``teacher_data: free``, nothing
  (``accounting.py`` explains both; the report shows both).

``P_s`` / ``P_t``: the training prompts' mean length in the student's / teacher's tokens (exact);
``C``: the completion length, ``budget.completion_tokens``, else ``train.max_new_tokens`` (a bound
for the student: real completions can stop earlier, on-policy ones at other lengths than the
teacher's); ``q``: the teacher's completion tokens per student completion token
(``Sizes.teacher_tokens_per_token``): 1 for the same tokenizer; across tokenizers the teacher reads
its own tokenization of the completion, measured on the training references
(``token_ratio.py``: about 2 for a char-level teacher of a BPE student, about 0.5 the other way).
The report shows each run's recorded FLOPs next to its planned steps, so the match can be checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from onpolicy.compare.accounting import TEACHER_DATA, TeacherData, teacher_rows
from onpolicy.errors import ConfigError, check_known_keys
from onpolicy.trainer.step_metrics import ComputeBudget

MAX_STEPS = 1_000_000  # a budget that buys more steps than this is a config mistake


@dataclass(frozen=True)
class BudgetSpec:
    """The ``budget`` block of a compare config.

    Attributes:
        match: ``steps``: every method runs ``train.steps`` optimizer steps; ``flops``: every method
            gets the same estimated training FLOPs (its own number of steps).
        reference: (``flops``) the method that runs ``train.steps`` steps; its estimated FLOPs are
            everyone's budget.
        flops: (``flops``) the budget in FLOPs, instead of a reference method.
        completion_tokens: completion length the estimate assumes (None: ``train.max_new_tokens``).
        teacher_data: ``paid`` or ``free``: the accounting the FLOPs budget matches and the
            report's headline uses (``accounting.py``); the report shows both.
    """

    match: Literal["steps", "flops"] = "steps"
    reference: str | None = None
    flops: float | None = None
    completion_tokens: int | None = None
    teacher_data: TeacherData = "paid"


_KEYS = {"match", "reference", "flops", "completion_tokens", "teacher_data"}


def parse_budget(raw: dict[str, Any] | None, methods: Sequence[Any]) -> BudgetSpec:
    """Validate the ``budget`` block against the config's ``methods`` (one-line errors)."""
    raw = dict(raw or {})
    check_known_keys("budget", raw, _KEYS)
    match = raw.get("match", "steps")
    if match not in ("steps", "flops"):
        raise ConfigError(f"budget.match={match!r}; use 'steps' or 'flops'")
    spec = BudgetSpec(
        match=match,
        reference=raw.get("reference"),
        flops=None if raw.get("flops") is None else float(raw["flops"]),
        completion_tokens=raw.get("completion_tokens"),
        teacher_data=raw.get("teacher_data", "paid"),
    )
    if spec.teacher_data not in TEACHER_DATA:
        raise ConfigError(
            f"budget.teacher_data={spec.teacher_data!r}; use 'paid' (the teacher's samples cost "
            "their generation FLOPs) or 'free' (as if the dataset existed)"
        )
    if spec.completion_tokens is not None and int(spec.completion_tokens) < 1:
        raise ConfigError(f"budget.completion_tokens={spec.completion_tokens}; use an int >= 1")
    if match == "steps":  # equal steps need no reference: one kept from a flops config is dropped
        if spec.flops is not None:
            raise ConfigError("budget.flops needs budget.match=flops; drop it for equal steps")
        return BudgetSpec(match="steps", completion_tokens=spec.completion_tokens)
    if (spec.reference is None) == (spec.flops is None):
        raise ConfigError(
            "budget.match=flops needs exactly one of budget.reference (a method that runs "
            "train.steps steps, e.g. sft) or budget.flops (the FLOPs each method gets)"
        )
    if spec.flops is not None and not spec.flops > 0:
        raise ConfigError(f"budget.flops={spec.flops}; use a positive number, e.g. 1.0e12")
    if spec.reference is not None:
        by_name = {m.name: m for m in methods}
        if spec.reference not in by_name:
            raise ConfigError(
                f"budget.reference={spec.reference!r} is not one of the methods {list(by_name)}"
            )
        if by_name[spec.reference].objective == "none":
            raise ConfigError(
                f"budget.reference={spec.reference!r} trains nothing (no FLOPs); name a trained "
                "method, e.g. sft"
            )
    return spec


@dataclass(frozen=True)
class Sizes:
    """What the estimate needs to know about the models and the data.

    Attributes:
        student_params, teacher_params: ``N_s``, ``N_t``.
        prompt_tokens, teacher_prompt_tokens: mean training-prompt length in the student's and the
            teacher's tokens (``P_s``, ``P_t``).
        completion_tokens: ``C``.
        rows_per_step: completions per optimizer step (``batch_size``).
        distinct_prompts: training prompts (each gets one fixed teacher sample).
        span_ends_per_token: positions a cross-tokenizer hidden term compares per completion
            token (aligned spans per student token, ``hidden_cost.span_ends_per_token``; 1.0
            when no method of this student has one).
        teacher_tokens_per_token: ``q``, the teacher's completion tokens per student completion
            token (``token_ratio.teacher_tokens_per_token``; 1.0 for the same tokenizer).
    """

    student_params: int
    teacher_params: int
    prompt_tokens: float
    teacher_prompt_tokens: float
    completion_tokens: int
    rows_per_step: int
    distinct_prompts: int
    span_ends_per_token: float = 1.0
    teacher_tokens_per_token: float = 1.0

    @property
    def teacher_row(self) -> float:
        """Positions of one row through the teacher: ``P_t + q C``."""
        return self.teacher_prompt_tokens + self.teacher_tokens_per_token * self.completion_tokens


@dataclass(frozen=True)
class StepCost:
    """A method's estimated FLOPs: ``once`` before training, then ``per_step(step)`` each step."""

    once: float
    per_step: Callable[[int], float]


def step_cost(objective: Any, sizes: Sizes, horizon: int, teacher_data: str = "paid") -> StepCost:
    """The estimated FLOPs of training ``objective`` (see the module docstring); ``horizon``: the
    steps for which to plan (the teacher samples of later steps are taken as already paid)."""
    s = sizes
    student_row = s.prompt_tokens + s.completion_tokens
    teacher_row = s.teacher_row  # the teacher reads its own tokens (q C of the completion)

    def flops(train: float = 0.0, generated: float = 0.0, teacher: float = 0.0) -> float:
        """The trainer's own accounting (``ComputeBudget.flops``) of these positions."""
        tally = ComputeBudget(
            student_gen_tokens=generated, student_train_tokens=train, teacher_tokens=teacher
        )  # float positions: the estimate uses mean prompt lengths
        return tally.flops(s.student_params, s.teacher_params)

    train = flops(train=student_row * s.rows_per_step)
    rollout = flops(generated=student_row * s.rows_per_step)
    scoring = flops(teacher=teacher_row * s.rows_per_step) if objective.needs_teacher else 0.0
    sample = flops(teacher=teacher_row) if teacher_data == "paid" else 0.0
    sources = [objective.batch_source(k) for k in range(horizon)]
    rows = teacher_rows(sources, s.rows_per_step)  # teacher-sampled rows before each step

    def per_step(step: int) -> float:
        source = sources[step] if step < horizon else objective.batch_source(step)
        cost = train + scoring + (rollout if source == "student" else 0.0)
        if source == "teacher" and step < horizon:  # the distinct samples first used here
            new = min(rows[step + 1], s.distinct_prompts) - min(rows[step], s.distinct_prompts)
            cost += sample * new
        return cost

    return StepCost(0.0, per_step)


def run_flops(cost: StepCost, steps: int) -> float:
    """Estimated FLOPs of ``steps`` optimizer steps (``once`` included)."""
    return cost.once + sum(cost.per_step(k) for k in range(steps))


def steps_within(cost: StepCost, budget: float, name: str) -> int:
    """The most optimizer steps whose estimated FLOPs fit in ``budget`` (a ``ConfigError`` when not
    even one does, or when the budget buys more than ``MAX_STEPS``)."""
    spent, steps = cost.once, 0
    while steps < MAX_STEPS:
        nxt = spent + cost.per_step(steps)
        if nxt > budget * (1 + 1e-9):
            break
        spent, steps = nxt, steps + 1
    if steps == 0:
        raise ConfigError(
            f"method {name!r} needs {cost.once + cost.per_step(0):.3g} FLOPs for one step, more "
            f"than the budget of {budget:.3g}; raise budget.flops (or the reference's train.steps)"
        )
    if steps >= MAX_STEPS:
        raise ConfigError(
            f"the budget of {budget:.3g} FLOPs buys method {name!r} over {MAX_STEPS} steps; "
            "lower budget.flops"
        )
    return steps


def plan_steps(
    spec: BudgetSpec, steps: int, costs: dict[str, StepCost | None]
) -> tuple[dict[str, int], float | None]:
    """Optimizer steps per method (``None`` cost: the method trains nothing, 0 steps) and the FLOPs
    budget (None in ``steps`` mode, where every trained method runs ``steps``)."""
    if spec.match == "steps":
        return {m: (0 if c is None else steps) for m, c in costs.items()}, None
    if spec.reference is not None:
        ref = costs[spec.reference]
        assert ref is not None  # parse_budget refused an untrained reference
        budget = run_flops(ref, steps)
    else:
        assert spec.flops is not None
        budget = spec.flops
    out = {}
    for name, cost in costs.items():
        if cost is None:
            out[name] = 0
        elif name == spec.reference:
            out[name] = steps
        else:
            out[name] = steps_within(cost, budget, name)
    return out, budget


@dataclass
class Plan:
    """Every (method, seed) run's optimizer steps, planned before training.

    Attributes:
        spec: the budget block it follows.
        steps: optimizer steps per ``(method, seed)`` (0 for methods that train nothing).
        estimated_flops: the estimate of each run's training FLOPs (None in ``steps`` mode).
        budget_flops: per seed, the FLOPs every method got (None in ``steps`` mode).
    """

    spec: BudgetSpec
    steps: dict[tuple[str, int], int]
    estimated_flops: dict[tuple[str, int], float | None]
    budget_flops: dict[int, float | None]


def plan_runs(cfg: Any, dirs: Any, task: Any, teacher_params: int) -> Plan:
    """The ``Plan`` of a comparison config ``cfg`` (``CompareConfig``) on the resolved model
    folders ``dirs`` (``ModelDirs``) and ``task``; checks the budget up front (``ConfigError``)."""
    spec: BudgetSpec = cfg.budget
    steps, estimated, budgets = {}, {}, {}
    sizes = _sizes_by_student(cfg, dirs, task, teacher_params) if spec.match == "flops" else {}
    for seed in cfg.seeds:
        costs = {m.name: _cost(cfg, dirs, m, seed, sizes) for m in cfg.methods}
        planned, budgets[seed] = plan_steps(spec, cfg.train.steps, costs)
        for name, n in planned.items():
            steps[(name, seed)] = n
            cost = costs[name]
            estimated[(name, seed)] = None if cost is None or not sizes else run_flops(cost, n)
    return Plan(spec, steps, estimated, budgets)


def _cost(cfg: Any, dirs: Any, method: Any, seed: int, sizes: dict[str, Sizes]) -> StepCost | None:
    """The method's ``StepCost`` (None when it trains nothing; a placeholder in ``steps`` mode)."""
    if method.objective == "none":
        return None
    if not sizes:  # steps mode: only "trains or not" matters
        return StepCost(0.0, lambda step: 0.0)
    from onpolicy.compare.methods import trainer_config
    from onpolicy.trainer.setup import build_objective

    if method.objective == "trl_sft":  # TRL's SFTTrainer spends what the engine's sft does
        method = dataclasses.replace(method, objective="sft", params={})
    student_dir = _student_dir(dirs, method.student)
    config = trainer_config(method, cfg.train, seed, student_dir, dirs.teacher, cfg.output_dir)
    horizon = 4 * cfg.train.steps
    objective = build_objective(config)
    cost = step_cost(objective, sizes[method.student], horizon, cfg.budget.teacher_data)
    from onpolicy.compare.hidden_cost import with_hidden_cost

    return with_hidden_cost(cost, config, objective, sizes[method.student])


def _sizes_by_student(cfg: Any, dirs: Any, task: Any, teacher_params: int) -> dict[str, Sizes]:
    """``Sizes`` for each student kind the methods use (``same`` / ``cross``)."""
    from onpolicy.chat import render_prompts
    from onpolicy.compare.evaluate import num_params
    from onpolicy.models import load_model, load_tokenizer

    prompts = list(task.train_prompts)
    teacher_tok = load_tokenizer(dirs.teacher)
    p_t = sum(len(x) for x in render_prompts(teacher_tok, prompts)) / len(prompts)
    completion = cfg.budget.completion_tokens or cfg.train.max_new_tokens
    out = {}
    for kind in dict.fromkeys(m.student for m in cfg.methods if m.objective != "none"):
        path = _student_dir(dirs, kind)
        tok = load_tokenizer(path)
        out[kind] = Sizes(
            student_params=num_params(load_model(path)),
            teacher_params=teacher_params,
            prompt_tokens=sum(len(x) for x in render_prompts(tok, prompts)) / len(prompts),
            teacher_prompt_tokens=p_t,
            completion_tokens=int(completion),
            rows_per_step=cfg.train.batch_size,
            distinct_prompts=len({(p.text, str(p.messages)) for p in prompts}),
            span_ends_per_token=_span_ends(cfg, kind, tok, teacher_tok, prompts),
            teacher_tokens_per_token=_teacher_ratio(tok, teacher_tok, prompts),
        )
    return out


def _span_ends(cfg: Any, kind: str, tok: Any, teacher_tok: Any, prompts: list[Any]) -> float:
    """``Sizes.span_ends_per_token`` for the methods on student ``kind`` (measured only when one
    of them has a hidden term and the tokenizers differ)."""
    from alignment import same_tokenizer
    from onpolicy.compare.hidden_cost import span_ends_per_token

    hidden = any(m.student == kind and float(m.hidden.get("weight") or 0) > 0 for m in cfg.methods)
    if not hidden or same_tokenizer(tok, teacher_tok):
        return 1.0
    return span_ends_per_token(tok, teacher_tok, prompts)


def _teacher_ratio(tok: Any, teacher_tok: Any, prompts: list[Any]) -> float:
    """``Sizes.teacher_tokens_per_token`` (1.0 for the same tokenizer)."""
    from alignment import same_tokenizer
    from onpolicy.compare.token_ratio import teacher_tokens_per_token

    if same_tokenizer(tok, teacher_tok):
        return 1.0
    return teacher_tokens_per_token(tok, teacher_tok, prompts)


def _student_dir(dirs: Any, kind: str) -> str:
    key = "student" if kind == "same" else "cross_student"
    path = getattr(dirs, key)
    if path is None:
        raise ConfigError(f"methods with student={kind!r} need models.{key} in the config")
    return path

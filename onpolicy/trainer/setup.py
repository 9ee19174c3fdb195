"""Build a run's components from a validated ``Config``: student (LoRA or full), teacher, rollout
backends, objective, optimizer and scheduler (those two from ``trainer.optim``). No training logic
here."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from onpolicy.config import Config
from onpolicy.errors import ConfigError
from onpolicy.models import resolve_model_path
from onpolicy.rollout.base import close_all
from onpolicy.trainer.optim import build_optimizer, build_scheduler
from onpolicy.trainer.sources import SampleSources
from onpolicy.types import Prompt, SamplingParams

if TYPE_CHECKING:  # annotations only (heavy or optional imports stay lazy)
    from transformers import PreTrainedTokenizerBase

    from onpolicy.objectives.base import Objective
    from onpolicy.rollout.base import RolloutBackend
    from onpolicy.types import Rollout


class Teacher(Protocol):
    """What the trainer asks of a teacher: ``LocalTeacher``, ``VLLMTeacher`` or a ``TeacherSet``
    (``onpolicy.teacher``) scores a rollout."""

    def score(self, rollout: Rollout) -> Any: ...


@dataclass
class Components:
    """Everything the loop drives.

    Attributes:
        model: the student as ``accelerator.prepare`` returned it (DDP-wrapped when distributed,
            sharded under FSDP); losses run through it so the wrappers see every forward.
        raw_model: the unwrapped student (generation, saving); under FSDP an unsharded copy
            refreshed after every optimizer step (``onpolicy.trainer.sharding.FullCopy``).
        tokenizer: the student's tokenizer.
        teacher: a ``LocalTeacher`` or ``VLLMTeacher`` (``onpolicy.teacher.backends``), a
            ``TeacherSet`` with ``teachers:``, None when the objective needs none.
        backend: the student's rollout backend.
        objective: the registered objective built from ``config.objective``.
        optimizer, scheduler: from ``config.optim``; the scheduler steps once per optimizer step.
        sampling: the rollout's ``SamplingParams``.
        sources: where batches come from (``trainer.sources``: the teacher's rollout backend, the
            student's end-of-turn id); its fixed teacher samples are drawn by ``train`` once the
            prompts are known.
        projection: the hidden-state projection as ``prepare`` returned it (trained with the
            student, saved in checkpoints, never exported), None without trainable maps.
    """

    model: torch.nn.Module
    raw_model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    teacher: Teacher | None
    backend: RolloutBackend
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampling: SamplingParams
    sources: SampleSources
    projection: torch.nn.Module | None = None

    def close(self) -> None:
        """Shut down what the run started: the student's rollout backend and the teacher's
        sampler (a vLLM engine, in this process or in its child; a served teacher holds
        nothing open). Idempotent."""
        close_all([self.backend, self.sources.teacher_backend])

    def trainable_parameters(self) -> list[torch.Tensor]:
        """What the optimizer updates and the gradient clip sees: the student's trainable
        parameters, then the hidden-state projection's."""
        modules = [self.model] if self.projection is None else [self.model, self.projection]
        return [p for m in modules for p in m.parameters() if p.requires_grad]


def sampling_params(config: Config) -> SamplingParams:
    r = config.rollout
    return SamplingParams(
        max_new_tokens=r.max_new_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        n=r.n,
        stop_strings=tuple(r.stop_strings),
        stop_token_ids=tuple(r.stop_token_ids),
    )


def load_student(config: Config, device: torch.device) -> tuple[Any, Any]:
    """``(model, tokenizer)``; the weights of ``student.init_from`` when set; LoRA adapters applied
    when ``lora.enabled`` (targets are checked against the loaded model: a missing one is a
    one-line ``ConfigError``)."""
    from onpolicy.models import LoraSpec, apply_lora, load_model, load_saved_weights, load_tokenizer

    path = resolve_model_path(config.student.path)
    dtype = "float32" if config.student.dtype == "auto" else config.student.dtype
    tokenizer = load_tokenizer(path, config.student.gguf_file)
    model = load_model(path, dtype=dtype, device=device, gguf_file=config.student.gguf_file)
    if config.student.init_from is not None:  # a saved run's weights on the same architecture
        load_saved_weights(model, config.student.init_from)
    if config.lora.enabled:
        targets = config.lora.target_modules
        spec = LoraSpec(
            rank=config.lora.r,
            alpha=config.lora.alpha,
            dropout=config.lora.dropout,
            target_modules="all-linear" if targets == ["all-linear"] else tuple(targets),
        )
        model = apply_lora(model, spec)
    model.train()
    return model, tokenizer


def load_teachers(
    config: Config,
    student: Any,
    student_tok: Any,
    device: Any,
    output: str,
    hidden_layers: tuple[int, ...] = (),
):
    """``(teacher, BuiltTeacher)``: the one teacher of ``config.teacher``, or for
    ``config.teachers`` a ``TeacherSet`` and a ``RoutedSampler`` of their samplers (whose samples
    are in the student's tokens; the built teacher's tokenizer is then None)."""
    from alignment.tokens.chat import turn_end_id
    from onpolicy.teacher.backends import BuiltTeacher, build_teacher
    from onpolicy.teacher.routing import TeacherSet
    from onpolicy.trainer.routed_samples import RoutedSampler, SamplingTeacher

    if not config.teachers:
        built = build_teacher(config.teacher, student, student_tok, device, output, hidden_layers)
        return built.scorer, built
    if hidden_layers:
        raise ConfigError("hidden-state distillation takes one teacher; drop teachers: or hidden")
    each: dict[str, BuiltTeacher] = {}
    try:
        for name, t in config.teachers.items():
            each[name] = build_teacher(t, student, student_tok, device, output)
    except BaseException:  # the engines of the teachers already built are shut down
        close_all(list(each.values()))
        raise
    weights = {name: t.weight for name, t in config.teachers.items()}
    samplers = {
        name: SamplingTeacher(b.sampler, b.tokenizer, b.scorer.mode == "same")
        for name, b in each.items()
    }
    sampler = RoutedSampler(
        samplers, weights, student_tok, turn_end_id(student_tok), config.train.seed
    )
    teachers = TeacherSet({name: b.scorer for name, b in each.items()}, weights)
    return teachers, BuiltTeacher(teachers, sampler, None)


def build_objective(config: Config) -> Any:
    """The registered objective with ``objective.params``; a ``seed`` argument, when the factory
    takes one and the params do not set it, gets ``train.seed`` (GKD's per-step coin); with
    ``reward.function``, its ``TaskReward`` as ``reward_fn`` (``onpolicy.rewards``)."""
    from onpolicy.objectives.base import make_objective

    params = dict(config.objective.params)
    if config.reward.function is not None:  # the task reward joins the sampled-token advantage
        from onpolicy.rewards import build_task_reward

        r = config.reward
        params["reward_fn"] = build_task_reward(r.function, r.coef, r.normalize)
    return make_objective(config.objective.name, params, config.train.seed)


def mixed_precision(requested: str) -> str:
    """``requested`` when the device supports it, else ``no`` with a warning (fp16 needs CUDA)."""
    if requested == "fp16" and not torch.cuda.is_available():
        warnings.warn(
            "train.mixed_precision=fp16 needs a CUDA GPU; training in float32", stacklevel=2
        )
        return "no"
    return requested


def _load_models(config: Config, accelerator: Any) -> tuple:
    """``(student, tokenizer, full copy, objective, teacher, BuiltTeacher or None, hidden
    plan)``; the hidden plan (``onpolicy.hidden.build``) is None without a hidden term.

    FSDP / DeepSpeed ZeRO-3 shard the student in place in ``prepare``: then ``full`` is an
    unsharded ``FullCopy`` for rollouts, evaluation and saving (else None), a self-distillation
    teacher reads it, and every model is loaded whole (the teacher is never sharded)."""
    from onpolicy.trainer.sharding import (
        FullCopy,
        adopt_cpu_fsdp,
        configure_deepspeed,
        keep_models_whole,
        quiet_deepspeed_on_cpu,
    )

    quiet_deepspeed_on_cpu()
    t = config.train
    sharded = adopt_cpu_fsdp(accelerator)
    sharded |= configure_deepspeed(accelerator, t.micro_batch_size, t.grad_accum)
    keep_models_whole(accelerator)
    model, tokenizer = load_student(config, accelerator.device)
    full = FullCopy(model) if sharded else None
    objective = build_objective(config)
    _hand_over_reference(objective, model, full)
    plan = _hidden_plan(config, accelerator)
    teacher = built = None
    t = config.teacher
    from onpolicy.scores.cached import needs_live_teacher, open_cached_teacher

    wanted = objective.needs_teacher or t.path is not None or t.mode == "self" or config.teachers
    if wanted and needs_live_teacher(config, objective):
        student = model if full is None else full.model
        from onpolicy.objectives.base import teacher_output

        output = teacher_output(objective)  # what the objective declares
        layers = () if plan is None else tuple(x for _, x in plan.pairs)
        teacher, built = load_teachers(
            config, student, tokenizer, accelerator.device, output, layers
        )
    if t.scores is not None:  # dataset batches from the cache; the rest live
        weights = None if t.backend == "vllm-server" else t.path  # a server's are not on disk
        teacher = open_cached_teacher(t.scores, tokenizer, weights, t.gguf_file, live=teacher)
    return model, tokenizer, full, objective, teacher, built, plan


def _hidden_plan(config: Config, accelerator: Any) -> Any:
    """The hidden-state term's plan (``onpolicy.hidden.build.hidden_plan``), None when off."""
    if config.hidden.weight <= 0:
        return None
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ConfigError(
            "hidden-state distillation trains a projection next to the student, which DeepSpeed "
            "(one model per engine) cannot; use DDP or FSDP, or set hidden.weight=0"
        )
    from onpolicy.hidden.build import hidden_plan

    plan = hidden_plan(config)
    if plan.num_maps and accelerator.is_fsdp2:  # accelerate's FSDP2 prepare takes one model
        raise ConfigError(
            "hidden-state distillation with a trained projection cannot run under FSDP2 (one "
            "model per prepare); use DDP, or equal widths with hidden.projection=none"
        )
    return plan


def _hand_over_reference(objective: Any, model: Any, full: Any) -> None:
    """Objectives with a ``reference_kl`` term get the student's initial policy, taken here:
    after loading, before ``prepare`` shards it and before a checkpoint is restored."""
    from onpolicy.objectives.reference import UsesReference, initial_reference

    if isinstance(objective, UsesReference) and objective.reference_kl:
        objective.set_reference(initial_reference(model, None if full is None else full.model))


def build_components(config: Config, accelerator: Any) -> Components:
    """Load everything and ``prepare`` the student and optimizer (the scheduler is registered for
    checkpointing, not prepared: accelerate would step it once per process)."""
    loaded = _load_models(config, accelerator)
    built = loaded[5]
    try:
        return _assemble(config, accelerator, *loaded)
    except BaseException:  # an engine the teacher started is not left running
        if built is not None:
            built.close()
        raise


def _assemble(
    config: Config,
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    full: Any,
    objective: Any,
    teacher: Any,
    built: Any,
    plan: Any,
) -> Components:
    """``build_components`` once the models are loaded (``_load_models``)."""
    from alignment.tokens.chat import turn_end_id
    from onpolicy.rollout.base import make_backend
    from onpolicy.trainer.sharding import FullCopyBackend

    teacher_tok = None if built is None else built.tokenizer
    projection = None
    if plan is not None:
        from onpolicy.hidden.build import make_projection

        projection = make_projection(plan, config).to(accelerator.device)
    trained = (projection,) if plan is not None and plan.num_maps else ()
    optimizer = build_optimizer(model, config.optim, fused=full is None, extra=trained)
    scheduler = build_scheduler(optimizer, config.optim, config.train.steps)
    # the projection is prepared like the student: DDP-synchronized, saved and restored with it
    prepared, *prepared_extra, optimizer = accelerator.prepare(model, *trained, optimizer)
    if plan is not None:
        from onpolicy.hidden.build import wrap_objective

        projection = prepared_extra[0] if trained else projection
        objective = wrap_objective(objective, plan, config, projection)
    accelerator.register_for_checkpointing(scheduler)
    raw = accelerator.unwrap_model(prepared) if full is None else full.model
    extra = config.rollout.vllm if config.rollout.backend != "hf" else {}
    backend = make_backend(config.rollout.backend, model=raw, tokenizer=tokenizer, **extra)
    if full is not None:
        full.attach(accelerator.unwrap_model(prepared))  # the DeepSpeed engine's module
        full.refresh()
        accelerator.register_for_checkpointing(full)  # refreshed when a checkpoint loads
        backend = FullCopyBackend(backend, full)
    teacher_backend = None if built is None else built.sampler  # None for mode: self
    end_id = turn_end_id(tokenizer)  # its end of turn, else its EOS
    sources = SampleSources(
        student_backend=backend,
        tokenizer=tokenizer,
        end_id=end_id,
        teacher_backend=teacher_backend,
        render_teacher=_teacher_renderer(teacher_tok),
        same_tokenizer=teacher is None or getattr(teacher, "mode", "same") == "same",
    )
    return Components(
        model=prepared,
        raw_model=raw,
        tokenizer=tokenizer,
        teacher=teacher,
        backend=backend,
        objective=objective,
        optimizer=optimizer,
        scheduler=scheduler,
        sampling=sampling_params(config),
        sources=sources,
        projection=prepared_extra[0] if trained else None,
    )


def _teacher_renderer(teacher_tok: Any) -> Callable[[Prompt], list[int]] | None:
    """``prompt -> ids`` with the teacher's chat template (None without a teacher tokenizer)."""
    if teacher_tok is None:
        return None
    from onpolicy.chat import render_prompt

    return lambda prompt: render_prompt(teacher_tok, prompt)

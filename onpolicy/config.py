"""One typed run config: YAML in, command-line overrides, validated before any model loads.

Layout: one block per swappable component, flat scalar keys inside each block::

    student:   {path: tiny:small, dtype: float32, max_length: 256, init_from: runs/warm}
    teacher:   {path: ..., mode: auto, backend: local}   # backend: local | vllm | vllm-server
    teachers:  {math: {path: ..., weight: 1.0}, chat: {...}}  # several (instead of teacher:)
    lora:      {enabled: true, r: 8, alpha: 16, target_modules: [q_proj, v_proj]}
    rollout:   {backend: hf, max_new_tokens: 32, temperature: 1.0, vllm: {...}}
    objective: {name: reverse_kl, params: {beta: 1.0}}
    hidden:    {weight: 1.0, loss: mse, layer_map: [[1, 2], [2, 4]]}   # optional: off by default
    data:      {path: prompts.jsonl, eval_path: ..., on_too_long: skip}
    optim:     {lr: 1e-4, scheduler: cosine, warmup_steps: 10, grad_clip: 1.0}
    train:     {steps: 100, micro_batch_size: 4, grad_accum: 2, seed: 0, output_dir: runs/x}
    eval:      {every: 20, num_prompts: 32, greedy: true}
    logging:   {every: 1, jsonl: true, tensorboard: true}
    reward:    {function: rewards.py:correct, coef: 1.0}   # policy_gradient + a task reward

A model path is a local Hugging Face folder, a ``.gguf`` file, ``tiny:<size>[,key=value...]``
(a tiny model built in-process by ``onpolicy.tiny.tiny_model_dir``; e.g.
``tiny:small,pretrain_steps=300,seed=1,tokenizer=char``) or ``offline:smollm2|gemma3`` (a real
model from its package, ``onpolicy.offline``), so recipes run offline. Paths are checked and
resolved in one place, ``onpolicy.models`` (``check_model_path``, ``resolve_model_path``).

Every error is a ``ConfigError`` with one line that names the key, the bad value and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from onpolicy.config_parse import apply_overrides, build_dataclass
from onpolicy.errors import ConfigError


@dataclass
class ModelConfig:
    """The student. ``max_length``: context budget (prompt + completion tokens).

    ``init_from``: start from saved weights instead of ``path``'s own: a run folder (its
    ``final/``), a saved student folder or a checkpoint folder holding ``model.safetensors`` of
    the same architecture as ``path`` (which still gives the architecture and tokenizer)."""

    path: str = "tiny:tiny"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    max_length: int = 256
    gguf_file: str | None = None
    init_from: str | None = None


@dataclass
class TeacherConfig:
    """The teacher. ``mode``: ``same`` (same tokenizer, checked by content), ``cross`` (different
    tokenizers, through the alignment layer), ``auto`` (decide by comparing tokenizers), ``self``
    (the student's own base with LoRA adapters disabled; needs ``lora.enabled``).
    ``samples``: teacher-sampled batches (SFT, GKD's off-policy share) are ``fresh`` samples every
    step, or ``fixed``: one sample per prompt drawn once before training (sequence-level KD's
    dataset); ``sample_seed``: the seed of that draw (default ``train.seed``), so runs of several
    seeds can train on one dataset.
    ``scores``: cached top-k scores (``onpolicy score``) for the dataset batches, read with no
    teacher model in memory; other batches (GKD's on-policy share) need ``path``."""

    path: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    mode: Literal["same", "cross", "auto", "self"] = "auto"
    top_k: int = 0  # 0 = full distribution; > 0 = sparse top-k scores
    gguf_file: str | None = None
    samples: Literal["fresh", "fixed"] = "fresh"
    scores: str | None = None  # a folder written by `onpolicy score` (onpolicy.scores.cached)
    # where the teacher runs (``onpolicy.teacher.backends``): ``local`` (transformers, this
    # process), ``vllm`` (a vLLM engine in this process, started on ``path``; ``vllm`` keys are
    # ``VLLMEngineOptions``), ``vllm-server`` (a running ``vllm serve`` at ``server_url``; ``path``
    # gives the tokenizer; ``vllm`` keys are ``RetryPolicy`` fields). vLLM teachers return top-k
    # log-probabilities: ``top_k`` per position (0 = 64 same tokenizer, 256 across tokenizers,
    # or only the sampled token's when the objective needs no more: ``policy_gradient``).
    backend: Literal["local", "vllm", "vllm-server"] = "local"
    server_url: str | None = None
    served_model: str | None = None
    vllm: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0  # in ``teachers:``: share of the loss for prompts that name no teacher
    sample_seed: int | None = None


@dataclass
class LoraConfig:
    """A LoRA student through PEFT. Targets are checked against the loaded model."""

    enabled: bool = False
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    merge_on_export: bool = False


@dataclass
class RolloutConfig:
    """The student's sampler (``backend``: a registered rollout backend) and its sampling.

    ``vllm``: keyword arguments for the ``vllm`` / ``vllm-server`` backend factories (e.g.
    ``gpu_memory_utilization``, ``kv_cache_space_gib``, ``lora_sync``, ``server_url``, ``sync``;
    see ``onpolicy.rollout.vllm_engine`` and ``vllm_server``), checked by the backend itself.
    Ignored by ``hf``.
    """

    backend: str = "hf"
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    stop_strings: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    vllm: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveConfig:
    """A registered objective and its keyword arguments (e.g. ``{beta: 0.5, lmbda: 0.5}``)."""

    name: str = "reverse_kl"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class HiddenConfig:
    """Hidden-state distillation added to the objective's loss: ``weight * sum_n d_n`` over the
    completion positions the objective counts (across tokenizers: over the ends of aligned
    spans, ``onpolicy.hidden.cross``), ``d_n`` the
    ``loss`` (``mse`` or ``cosine``, ``onpolicy.losses.hidden``) between the projected student
    states and the teacher's, averaged over the layer pairs; normalized with the objective's loss
    by the global token count. ``weight: 0`` (the default) turns it off.

    ``layer_map``: ``[[student, teacher], ...]`` indices of transformers' ``hidden_states`` (0 =
    embeddings, i = after layer i); empty: every student layer with the evenly spaced teacher
    layer (``onpolicy.hidden.layers``). ``projection``: ``auto`` (a trained linear map per pair
    when the widths differ, none when equal), ``linear`` (always) or ``none`` (equal widths
    only). ``projection_init``: ``xavier`` or ``identity``. The maps are saved in checkpoints,
    not in the exported student."""

    weight: float = 0.0
    loss: Literal["mse", "cosine"] = "mse"
    layer_map: list[list[int]] = field(default_factory=list)
    projection: Literal["auto", "linear", "none"] = "auto"
    projection_init: Literal["xavier", "identity"] = "xavier"


@dataclass
class DataConfig:
    """Prompts from a local JSONL/JSON/parquet file or a ``save_to_disk`` folder; the row format
    (``prompt`` or ``messages``, optional ``completion``) is in ``onpolicy.data``.

    Without ``eval_path``, ``eval_size`` rows are held out of ``path`` (after a seeded shuffle).
    ``chat``: a plain ``prompt`` is one user message rendered with each model's chat template
    (true) or raw text (false). ``on_too_long``: prompts longer than ``student.max_length -
    rollout.max_new_tokens`` are skipped (with a count) or raise.
    """

    path: str | None = None
    split: str = "train"
    eval_path: str | None = None
    eval_size: int = 16
    prompt_field: str = "prompt"
    messages_field: str = "messages"
    completion_field: str = "completion"
    chat: bool = False
    on_too_long: Literal["skip", "error"] = "skip"
    shuffle: bool = True
    teacher_field: str = "teacher"  # with ``teachers:``, a row's field naming its teacher


@dataclass
class OptimConfig:
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = 1.0  # max global grad norm; null = off


@dataclass
class TrainConfig:
    """``micro_batch_size``: prompts per micro-batch per process (each gives ``rollout.n`` rows);
    one optimizer step sees ``micro_batch_size * grad_accum * processes`` prompts."""

    steps: int = 100
    micro_batch_size: int = 4
    grad_accum: int = 1
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    output_dir: str = "runs/onpolicy"
    checkpoint_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    max_nonfinite: int = 3  # stop after this many skipped steps with a NaN/inf loss
    resume: bool = True  # resume from the newest checkpoint in output_dir when there is one
    save_final: bool = True


@dataclass
class EvalConfig:
    """Teacher-forced KL to the teacher on held-out prompts, on the student's own completions
    (greedy when ``greedy``, else sampled at ``rollout.temperature``), and the task metric.

    ``every``: optimizer steps between evaluations; 0 = only before and after training.
    ``metric``: ``none``, a built-in (``exact_match``, ``contains``) or ``path/to/file.py:function``
    (a function ``(completion_text, prompt) -> float`` in a local file; see ``onpolicy.metrics``),
    logged as ``eval/score``.
    ``forward_nll``: also the student's NLL per token and per byte of one held-out temperature-1
    teacher sample per prompt, drawn once per run (``onpolicy.trainer.forward_pool``); off by
    default (one teacher generation over the held-out prompts, plus a forward per evaluation)."""

    every: int = 0
    metric: str = "none"
    num_prompts: int = 16
    greedy: bool = True
    max_new_tokens: int | None = None  # None = rollout.max_new_tokens
    batch_size: int = 8
    forward_nll: bool = False


@dataclass
class LoggingConfig:
    every: int = 1
    jsonl: bool = True
    tensorboard: bool = False
    wandb: bool = False
    trackio: bool = False
    progress_bar: bool = True
    project: str = "onpolicy"


@dataclass
class RewardConfig:
    """A task reward added to the sampled-token objective's advantage (``policy_gradient``):
    ``kl_coef * teacher log-ratio + coef * group-normalized reward`` (``onpolicy.rewards``).

    ``function``: ``path/to/file.py:function`` (``(completion_text, prompt) -> float``, a local
    file, relative to the config's folder) or a built-in metric (``exact_match``, ``contains``);
    None = no task reward. ``normalize``: ``std`` (minus the prompt's mean over its ``rollout.n``
    samples, over their std) or ``center`` (minus the mean only). The stable start measured in
    docs/results/custom-loop.md: objective ``kl_coef: 0.1``, ``advantage_norm: batch``, lr 3e-4,
    ``rollout.n: 4`` (``configs/pg_task_reward.yaml``)."""

    function: str | None = None
    coef: float = 1.0
    normalize: Literal["std", "center"] = "std"


@dataclass
class Config:
    """The whole run. See the module docstring for the YAML layout."""

    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # several teachers, by name (``onpolicy.teacher.routing``): a prompt whose row names one in
    # ``data.teacher_field`` is scored by it alone; the others by every teacher, the losses
    # mixed by ``weight`` (teacher samples: ``onpolicy.trainer.routed_samples``). Leave ``teacher``
    # unset when this is set.
    teachers: dict[str, TeacherConfig] = field(default_factory=dict)
    lora: LoraConfig = field(default_factory=LoraConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    hidden: HiddenConfig = field(default_factory=HiddenConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Loading: YAML -> nested dict -> overrides -> typed dataclasses (unknown keys rejected;
# the generic part in ``onpolicy.config_parse``)


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read ``path`` (YAML), apply ``key.sub=value`` overrides, build and validate a ``Config``.

    Relative ``data.path``/``data.eval_path`` that exist next to the YAML file (and not in the
    working directory) are made absolute, so the config runs from any directory.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found; pass an existing YAML file")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {first}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of blocks at the top")
    raw = apply_overrides(raw, overrides)
    config = from_dict(raw)
    # imported here, not at the top, so that ``onpolicy.config`` stays free of torch (the checks
    # import ``onpolicy.models``); ``config_checks`` imports this module for annotations only
    from onpolicy.config_checks import resolve_path, validate

    base_dir = Path(path).parent if path is not None else None
    validate(config, base_dir=base_dir)
    for key in ("path", "eval_path"):
        value = getattr(config.data, key)
        if value is not None:
            setattr(config.data, key, str(resolve_path(value, base_dir).resolve()))
    if config.teacher.scores is not None:
        config.teacher.scores = str(resolve_path(config.teacher.scores, base_dir).resolve())
    file, sep, fn = (config.reward.function or "").rpartition(":")
    if sep and file.endswith(".py"):  # a local reward file, relative to the YAML's folder
        config.reward.function = f"{resolve_path(file, base_dir).resolve()}:{fn}"
    return config


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a ``Config`` from nested dicts; unknown keys raise with the closest known key."""
    return build_dataclass(Config, raw, prefix="")

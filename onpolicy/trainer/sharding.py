"""Sharded students (FSDP2) on any device, CPU included, under ``accelerate launch``.

Two things accelerate does not do on a machine without an accelerator, done here:

- ``accelerate launch`` starts FSDP jobs with ``torch.distributed.run``; the processes form a
  gloo group only when the ``Accelerator`` is built with ``cpu=True`` (``use_cpu`` in the launch
  config is not passed to them). ``no_accelerator_device()`` tells the trainer to ask for it.
- accelerate turns FSDP on only for GPU-like distributed types, never for ``MULTI_CPU``.
  ``adopt_cpu_fsdp`` switches a ``MULTI_CPU`` run launched with an FSDP config (the launcher sets
  ``ACCELERATE_USE_FSDP=true``) to accelerate's own FSDP2 path: ``prepare`` shards the student
  with ``fully_shard``, ``no_sync``/``clip_grad_norm_``/``save_state``/``load_state`` take their
  FSDP2 branches. FSDP2 runs over gloo on CPU; FSDP1 does not (it needs a GPU).

Under FSDP the sharded student computes the losses (every process runs the same number of
forwards, as FSDP's collectives need); rollouts, evaluation (main process only) and the final save
use ``FullCopy``: an unsharded copy of the student on each process, refreshed from the shards
after every optimizer step and after a checkpoint is loaded, so generation never runs a collective.
It costs one copy of the parameters per process (no gradients, no optimizer state: those stay
sharded); for a student too large for that, use a vLLM rollout backend and no evaluation.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from onpolicy.errors import ConfigError


def no_accelerator_device() -> bool:
    """True when torch sees no accelerator (CUDA, XPU, MPS, ...) and the launcher did not ask
    for DeepSpeed (which sets up its own CPU accelerator and gloo group): build the
    ``Accelerator`` with ``cpu=True``."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return torch.accelerator.current_accelerator() is None and not deepspeed


def quiet_deepspeed_on_cpu() -> None:
    """Where DeepSpeed is installed, accelerate imports it (``unwrap_model``), and DeepSpeed warns
    on stdout that it falls back to its CPU accelerator, which corrupts the CLI's JSON on stdout.
    Without an accelerator, name that choice (``DS_ACCELERATOR=cpu``, logged at info level only);
    a value the user set is kept."""
    if torch.accelerator.current_accelerator() is None:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def fsdp_requested() -> bool:
    """The launcher asked for FSDP (``distributed_type: FSDP`` in the accelerate config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def adopt_cpu_fsdp(accelerator: Any) -> bool:
    """Switch a CPU (``MULTI_CPU``, gloo) run launched with an FSDP config to accelerate's FSDP2
    path. Returns True when the run is (now) FSDP. Call before ``accelerator.prepare``."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if accelerator.distributed_type == DistributedType.FSDP:
        check_fsdp_config(accelerator)
        return True
    if accelerator.distributed_type != DistributedType.MULTI_CPU or not fsdp_requested():
        return False
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables the launcher set
    if plugin.fsdp_version != 2:
        raise ConfigError(
            "FSDP on CPU needs fsdp_version: 2 in the accelerate config (FSDP1 needs a GPU); "
            "use configs/accelerate/fsdp_cpu.yaml"
        )
    # accelerate keeps the distributed type in two shared states: set both
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    check_fsdp_config(accelerator)
    return True


def check_fsdp_config(accelerator: Any) -> None:
    """One-line errors for FSDP settings this trainer does not support (GPU or CPU)."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is not None and plugin.cpu_ram_efficient_loading:
        raise ConfigError(
            "fsdp_cpu_ram_efficient_loading: true is not supported by onpolicy (each process "
            "keeps a full copy of the student for rollouts); set it to false"
        )


def is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def configure_deepspeed(accelerator: Any, micro_batch_size: int, grad_accum: int) -> bool:
    """Fill what accelerate's DeepSpeed ``prepare`` needs without a dataloader, and refuse what
    the loop cannot do under DeepSpeed. Returns True when the run uses ZeRO stage 3 (partitioned
    parameters: rollouts need ``FullCopy``). Call before ``accelerator.prepare``.

    accelerate runs ``engine.step()`` inside every ``accelerator.backward`` (``no_sync`` is a no-op
    under ZeRO >= 2), so one optimizer step must be one backward: ``train.grad_accum`` 1 and
    DeepSpeed's ``gradient_accumulation_steps`` 1 (raise ``train.micro_batch_size`` instead)."""
    if not is_deepspeed(accelerator):
        return False
    fix_cpu_deepspeed_ranks(accelerator)
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    if grad_accum != 1 or ds.get("gradient_accumulation_steps", 1) not in (1, "auto"):
        raise ConfigError(
            "under DeepSpeed one optimizer step must be one backward: set train.grad_accum=1 and "
            "deepspeed gradient_accumulation_steps: 1 (raise train.micro_batch_size instead)"
        )
    ds["gradient_accumulation_steps"] = 1
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = micro_batch_size
    return int(ds.get("zero_optimization", {}).get("stage", 0)) == 3


def fix_cpu_deepspeed_ranks(accelerator: Any) -> None:
    """On a machine without an accelerator, accelerate starts DeepSpeed's (gloo) process group but
    records one process of rank 0 everywhere (it finds no backend name): every process would act
    as the main one. Record the group's real size and ranks (a no-op elsewhere; idempotent)."""
    import torch.distributed as dist
    from accelerate.state import PartialState

    if not is_deepspeed(accelerator):
        return
    if accelerator.state.backend is not None or not dist.is_initialized():
        return
    fixed = {
        "backend": dist.get_backend(),
        "num_processes": dist.get_world_size(),
        "process_index": dist.get_rank(),
        "local_process_index": int(os.environ.get("LOCAL_RANK", dist.get_rank())),
    }
    for state in (PartialState(), accelerator.state):
        for key, value in fixed.items():
            setattr(state, key, value)


def keep_models_whole(accelerator: Any) -> None:
    """Under DeepSpeed ZeRO-3, stop transformers from treating models as ZeRO-3 ones for the rest
    of the run. accelerate registers the ZeRO-3 config with transformers, which then partitions
    every model at load (the teacher and the rollout copy too, useless without DeepSpeed's hooks)
    and makes ``generate`` synchronize all processes at every token (evaluation runs on the main
    process alone: it would wait forever). The student is partitioned by ``prepare`` instead."""
    if not is_deepspeed(accelerator):
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


class FullCopy:
    """An unsharded copy of a student that FSDP shards in place.

    Make it with ``FullCopy(model)`` BEFORE ``accelerator.prepare(model, ...)``; then
    ``attach(prepared)``. ``refresh()`` is collective (every process calls it at the same point):
    it all-gathers each trainable parameter of the sharded student into the copy (frozen
    parameters never change). Registered with ``accelerator.register_for_checkpointing``, it
    refreshes itself when accelerate loads a checkpoint (after the model: custom objects load last).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self._sharded: torch.nn.Module | None = None
        self._trainable = [n for n, p in model.named_parameters() if p.requires_grad]

    def attach(self, sharded: torch.nn.Module) -> None:
        self._sharded = sharded

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the sharded student's trainable parameters into the full copy (collective)."""
        if self._sharded is None:
            raise RuntimeError("FullCopy.refresh before attach()")
        mine = dict(self.model.named_parameters())
        wanted = set(self._trainable)
        done = 0
        for name, p in self._sharded.named_parameters():
            if name in wanted:
                _copy_full(p, mine[name])
                done += 1
        if done != len(wanted):
            raise RuntimeError(
                f"FullCopy: {done} of {len(wanted)} trainable parameters found in the sharded "
                "student (attach the unwrapped module)"
            )

    # accelerate's checkpoint protocol (register_for_checkpointing)
    def state_dict(self) -> dict[str, int]:
        return {"trainable_parameters": len(self._trainable)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.refresh()


def _copy_full(p: torch.Tensor, into: torch.Tensor) -> None:
    """The whole of a sharded parameter (FSDP2 ``DTensor`` or ZeRO-3 partition) into ``into``;
    collective for sharded parameters."""
    from torch.distributed.tensor import DTensor

    if isinstance(p, DTensor):
        into.copy_(p.full_tensor().to(into.dtype))
    elif hasattr(p, "ds_id"):  # a DeepSpeed ZeRO-3 partitioned parameter
        import deepspeed

        with deepspeed.zero.GatheredParameters([p]):
            into.copy_(p.data.to(into.dtype))
    else:
        into.copy_(p.to(into.dtype))


class FullCopyBackend:
    """A rollout backend that samples from a ``FullCopy``: ``sync_weights`` (called by every
    process after each optimizer step) first refreshes the copy, then hands it to the wrapped
    backend. Everything else is the wrapped backend's."""

    def __init__(self, inner: Any, full: FullCopy) -> None:
        self.inner = inner
        self.full = full

    def generate(self, prompt_ids_B: Any, sampling: Any, prompts: Any = None) -> Any:
        return self.inner.generate(prompt_ids_B, sampling, prompts)

    def sync_weights(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        self.full.refresh()
        return self.inner.sync_weights(self.full.model, step)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

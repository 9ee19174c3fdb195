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
    """True when torch sees no accelerator (CUDA, XPU, MPS, ...): the run is CPU-only."""
    return torch.accelerator.current_accelerator() is None


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
        from torch.distributed.tensor import DTensor

        if self._sharded is None:
            raise RuntimeError("FullCopy.refresh before attach()")
        mine = dict(self.model.named_parameters())
        wanted = set(self._trainable)
        for name, p in self._sharded.named_parameters():
            if name not in wanted:
                continue
            full = p.full_tensor() if isinstance(p, DTensor) else p
            mine[name].copy_(full.to(mine[name].dtype))

    # accelerate's checkpoint protocol (register_for_checkpointing)
    def state_dict(self) -> dict[str, int]:
        return {"trainable_parameters": len(self._trainable)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.refresh()


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

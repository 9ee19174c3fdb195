"""The optimizer and learning-rate schedule of a run, from its ``optim`` block."""

from __future__ import annotations

import math

import torch

from onpolicy.config import OptimConfig
from onpolicy.errors import ConfigError


def build_optimizer(
    model: torch.nn.Module,
    cfg: OptimConfig,
    fused: bool = False,
    extra: tuple[torch.nn.Module, ...] = (),
) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters (LoRA: the adapters only), and those of the
    ``extra`` modules (the hidden-state projection), with the same settings.

    ``fused``: Adam/AdamW's fused kernel (TRL's default; its step time: benchmarks/RESULTS-e2e.md),
    used for plain parameters only (not FSDP/DeepSpeed-sharded ones)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the student has no trainable parameters; check lora.target_modules")
    params += [p for m in extra for p in m.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    plain = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    fused = fused and plain
    return cls(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
        fused=fused or None,
    )  # fmt: skip


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_steps``, then constant, linear decay to 0, or cosine to 0."""
    warm, total = cfg.warmup_steps, max(total_steps, 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        if cfg.scheduler == "linear":
            return 1.0 - progress
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

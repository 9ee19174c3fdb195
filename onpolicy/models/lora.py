"""LoRA students through PEFT: the adapters' spec, wrapping a model, loading saved adapters, and
running a model with its adapters off (the base model: a self-distillation teacher, the initial
policy of ``reference_kl``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from onpolicy.errors import ConfigError
from onpolicy.models.folders import existing_path
from onpolicy.models.load import load_model


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA student: adapters of rank ``rank`` on the named linear modules (leaf names such as
    ``q_proj``, or ``"all-linear"``), scaled by ``alpha / rank``, with dropout ``dropout``."""

    rank: int = 16
    alpha: float = 32.0
    target_modules: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "o_proj")
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ConfigError(f"lora rank must be a positive integer, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora dropout must be in [0, 1), got {self.dropout}")


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Sorted leaf names of the model's ``nn.Linear`` modules (what LoRA targets can name)."""
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name
        }
    )


def apply_lora(model: torch.nn.Module, spec: LoraSpec) -> Any:
    """Wrap ``model`` in a PEFT ``PeftModel`` with fresh LoRA adapters (only they train).

    Raises ``ConfigError`` naming the available modules when a target does not exist.
    """
    from peft import LoraConfig, get_peft_model

    targets: Sequence[str] | str = spec.target_modules
    if targets != "all-linear":
        targets = [targets] if isinstance(targets, str) else list(targets)
        available = linear_module_names(model)
        missing = [t for t in targets if t not in available]
        if missing:
            raise ConfigError(
                f"LoRA target modules {missing} do not exist in this model; "
                f"use some of {available} or 'all-linear'"
            )
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, config)


def is_peft(model: Any) -> bool:
    """True for a PEFT-wrapped model."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


@contextlib.contextmanager
def adapters_disabled(model: Any) -> Iterator[Any]:
    """Inside the block, ``model`` computes with its base weights only (its adapters off); a model
    without adapters is yielded unchanged. Used for self-distillation teachers."""
    if is_peft(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def load_lora_student(base_path: str | Path, adapter_dir: str | Path, **load_kwargs: Any) -> Any:
    """Base model + saved adapters (trainable), e.g. to resume a LoRA run."""
    from peft import PeftModel

    base = load_model(base_path, **load_kwargs)
    return PeftModel.from_pretrained(base, existing_path(adapter_dir, "adapter"), is_trainable=True)

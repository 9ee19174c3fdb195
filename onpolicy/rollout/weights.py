"""Export a student's weights for a rollout engine: full weights, or LoRA merged in float32.

Pure functions of a model (no engine imports), shared by the ``vllm`` and ``vllm-server`` backends.
Names are the plain Hugging Face checkpoint names (``model.layers.0.self_attn.q_proj.weight``) that
vLLM's ``load_weights`` expects, whatever PEFT wrapping the student has.

Why merge here and not with PEFT's ``merge_adapter``: merging in place and unmerging after the
sync rounds the frozen base to its dtype twice per sync, so a bf16 base drifts a little each step.
Here the base is never written; every sync computes ``W_base + scaling * B @ A`` afresh in float32
and casts the result once, so the engine always holds ``cast(W_base + current delta)``, never an
accumulation.
"""

from __future__ import annotations

import torch

from onpolicy.errors import ConfigError


def is_peft_model(model: torch.nn.Module) -> bool:
    """True for a PEFT-wrapped model (``PeftModel``) or a model with LoRA layers injected."""
    return any(_is_lora_layer(m) for m in model.modules())


def full_weights(
    model: torch.nn.Module, dtype: torch.dtype | None = None
) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every parameter and buffer of a plain (non-LoRA) model.

    Tensors are detached; cast to ``dtype`` when given (the engine's dtype).
    """
    if is_peft_model(model):
        raise ConfigError("full_weights got a LoRA model; use merged_lora_weights or adapter sync")
    return [(name, _cast(t, dtype)) for name, t in model.state_dict().items()]


def lora_delta(layer: torch.nn.Module) -> torch.Tensor:
    """float32 ``[out, in]`` weight delta of one PEFT LoRA ``Linear`` over its active adapters.

    ``delta = sum_a scaling_a * B_a @ A_a`` (transposed for ``fan_in_fan_out`` layers such as
    GPT-2's Conv1D), computed in float32 whatever the adapter's dtype.
    """
    base = layer.base_layer.weight
    delta = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    for adapter in _active_adapters(layer):
        if adapter not in layer.lora_A:
            continue
        if layer.use_dora.get(adapter, False):
            raise ConfigError(
                "DoRA adapters cannot be merged as a linear delta; use lora_sync: adapter"
            )
        a_R_in = layer.lora_A[adapter].weight.detach().float()
        b_out_R = layer.lora_B[adapter].weight.detach().float()
        d = (b_out_R @ a_R_in) * float(layer.scaling[adapter])
        delta += d.T if getattr(layer, "fan_in_fan_out", False) else d
    return delta


def merged_lora_weights(
    model: torch.nn.Module, dtype: torch.dtype | None = None
) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of a LoRA student, adapters merged: ``W = W_base + delta`` in float32.

    The result is cast once to ``dtype`` (default: the base weight's dtype). The model is not
    modified. ``modules_to_save`` copies replace the originals. Raises ``ConfigError`` for LoRA
    layer types other than ``Linear`` (embedding/conv LoRA, DoRA): sync those as an adapter.
    """
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    lora_layers = {}
    for name, module in base_model.named_modules():
        if _is_lora_layer(module):
            if not hasattr(module, "lora_A") or len(module.lora_A) == 0:
                raise ConfigError(
                    f"LoRA layer {name!r} ({type(module).__name__}) is not a Linear LoRA; "
                    "merged sync supports Linear only, use lora_sync: adapter"
                )
            lora_layers[name] = module
    out: dict[str, torch.Tensor] = {}
    for name, tensor in base_model.state_dict().items():
        clean = _clean_name(name)
        if clean is not None:
            out[clean] = tensor
    for name, layer in lora_layers.items():
        base_w = layer.base_layer.weight.detach()
        merged = base_w.float() + lora_delta(layer)
        out[f"{name}.weight"] = merged.to(dtype or base_w.dtype)
    return [(name, _cast(t, dtype)) for name, t in out.items()]


def _clean_name(name: str) -> str | None:
    """Plain checkpoint name of a PEFT state-dict key, or None for LoRA-only tensors."""
    if ".lora_" in name or "lora_magnitude_vector" in name or ".original_module." in name:
        return None
    if ".modules_to_save." in name:
        head, _, tail = name.partition(".modules_to_save.")
        return f"{head}.{tail.partition('.')[2]}"
    return name.replace(".base_layer.", ".")


def _active_adapters(layer: torch.nn.Module) -> list[str]:
    active = layer.active_adapters if hasattr(layer, "active_adapters") else layer.active_adapter
    return [active] if isinstance(active, str) else list(active)


def _is_lora_layer(module: torch.nn.Module) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft absent: no model can have LoRA layers
        return False
    return isinstance(module, LoraLayer)


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    t = t.detach()
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        return t.to(dtype)
    return t

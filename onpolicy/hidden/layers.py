"""Which hidden states are compared, and how they are read from a forward pass.

Layer indices follow transformers' ``output_hidden_states`` tuple (DistillKit's ``layer_mapping``
convention): ``0`` is the embedding output, ``i`` the output of decoder layer ``i`` (``1..L``; the
last one is after the final norm in Llama-style models). A layer map is a tuple of
``(student_index, teacher_index)`` pairs; the default pairs every student layer ``i = 1..Ls`` with
teacher layer ``round(i * Lt / Ls)`` (evenly spaced, the last with the last; TinyBERT's uniform
map; the identity when the depths are equal).

Hidden states are read with ``capture_hidden_states``: for the duration of a ``with`` block, every
forward of the model asks for ``output_hidden_states`` and the output's tuple is kept. The student's
own forward inside any objective's ``loss`` is captured this way, so the hidden-state term costs no
extra forward pass; ``pack_layers`` keeps the chosen layers at the packed completion positions
(``onpolicy.forward``), the same positions every objective's loss counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from onpolicy.errors import ConfigError

LayerPairs = tuple[tuple[int, int], ...]


def default_layer_map(student_layers: int, teacher_layers: int) -> LayerPairs:
    """``((i, round(i * Lt / Ls)) for i = 1..Ls)`` (halves round up): evenly spaced."""
    s, t = student_layers, teacher_layers
    return tuple((i, (2 * i * t + s) // (2 * s)) for i in range(1, s + 1))


def layer_map(
    pairs: Sequence[Sequence[int]], student_layers: int, teacher_layers: int
) -> LayerPairs:
    """The configured pairs (``hidden.layer_map``) checked against both depths, or the default
    when ``pairs`` is empty; a one-line ``ConfigError`` names a bad pair."""
    if not pairs:
        return default_layer_map(student_layers, teacher_layers)
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError(
                f"hidden.layer_map entry {list(pair)} is not a [student, teacher] pair of layer "
                "indices; write e.g. [[1, 2], [2, 4]]"
            )
        s, t = int(pair[0]), int(pair[1])
        for side, index, depth in (("student", s, student_layers), ("teacher", t, teacher_layers)):
            if not 0 <= index <= depth:
                raise ConfigError(
                    f"hidden.layer_map pair {[s, t]}: {side} index {index} is outside 0..{depth} "
                    f"(0 = embeddings, {depth} = the {side}'s last layer)"
                )
        out.append((s, t))
    if len(set(out)) != len(out):
        raise ConfigError(f"hidden.layer_map repeats a pair: {[list(p) for p in out]}")
    return tuple(out)


@dataclass
class CapturedForward:
    """What ``capture_hidden_states`` saw: each forward's ``hidden_states`` tuple (``L + 1``
    tensors ``[B, T, D]``, with gradients when the forward had them)."""

    calls: list[tuple[torch.Tensor, ...]]

    def only(self) -> tuple[torch.Tensor, ...]:
        """The hidden states of the one forward the block ran (an error on zero or several)."""
        if len(self.calls) != 1:
            raise RuntimeError(
                f"hidden-state distillation expects one forward of the model per loss, saw "
                f"{len(self.calls)}"
            )
        return self.calls[0]


def _hooked(model: Any) -> torch.nn.Module:
    """The module whose ``__call__`` every forward goes through: under DDP/FSDP/DeepSpeed
    wrappers their ``.module`` (the wrapper calls it), else the model itself (a PEFT model
    included: it passes ``output_hidden_states`` to its base model)."""
    return getattr(model, "module", model)


@contextlib.contextmanager
def capture_hidden_states(model: Any) -> Iterator[CapturedForward]:
    """Inside the block, ``model``'s forwards return (and this keeps) all hidden states."""
    captured = CapturedForward(calls=[])
    module = _hooked(model)

    def ask(_module, args, kwargs):  # forward pre-hook: request the hidden states
        return args, {**kwargs, "output_hidden_states": True}

    def keep(_module, _args, _kwargs, output):
        captured.calls.append(tuple(output.hidden_states))

    handles = [
        module.register_forward_pre_hook(ask, with_kwargs=True),
        module.register_forward_hook(keep, with_kwargs=True),
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def pack_layers(
    hidden_states: Sequence[torch.Tensor], layers: Sequence[int], mask_B_T: torch.Tensor
) -> torch.Tensor:
    """``[L, N, D]``: hidden state ``layers[l]`` at the ``N`` positions where ``mask_B_T`` is
    true, row-major (the packed completion positions of ``onpolicy.forward``)."""
    if not layers:
        raise ValueError("pack_layers needs at least one layer index")
    mask = mask_B_T.to(hidden_states[0].device)
    return torch.stack([hidden_states[i][mask] for i in layers])  # (L, N, D)


def model_shape(config_json: dict[str, Any]) -> tuple[int, int]:
    """``(num_hidden_layers, hidden_size)`` from a model folder's ``config.json`` contents
    (``text_config`` first for multimodal wrappers)."""
    for cfg in (config_json.get("text_config") or {}, config_json):
        layers, width = cfg.get("num_hidden_layers"), cfg.get("hidden_size")
        if isinstance(layers, int) and isinstance(width, int):
            return layers, width
    raise ConfigError(
        "hidden-state distillation needs num_hidden_layers and hidden_size in the model's "
        "config.json; this model has neither"
    )

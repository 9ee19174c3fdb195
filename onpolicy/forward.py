"""One forward pass of a causal LM over a rollout, kept only at the completion positions.

Everything downstream (teacher scores, objectives) works on *packed* completion positions: the ``N``
positions ``(b, t)`` of ``rollout.to_padded(...)`` whose next token is a completion token, in
row-major order (row 0's completion tokens first). Position ``(b, t)``'s logits predict token
``input_ids[b, t + 1]``. The forward always goes through ``model(...)`` itself (so DDP/FSDP wrappers
see it), and logits are sliced to ``vocab_size`` (padded embedding rows never count).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from onpolicy.losses.chunked import LMHead
from onpolicy.types import IGNORE_INDEX, PaddedBatch


@dataclass
class CompletionForward:
    """A model's outputs at the packed completion positions.

    Attributes:
        logits_N_V: logits predicting each completion token, sliced to the tokenizer's vocabulary
            (None when ``hidden`` was asked).
        hidden_N_D: final (normed) hidden states at those positions (only when ``hidden``).
        lm_head: the output head (weight ``[V, D]`` and bias sliced to the vocabulary, the model's
            final-logit soft-capping), only when ``hidden``: ``head_logits(hidden, lm_head)``.
        targets_N: the completion token each position predicts.
        row_N: the batch row of each position.
        num_tokens_B: completion tokens per row (``sum == N``).
    """

    logits_N_V: torch.Tensor | None
    hidden_N_D: torch.Tensor | None
    lm_head: LMHead | None
    targets_N: torch.Tensor
    row_N: torch.Tensor
    num_tokens_B: list[int]


def completion_positions(batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask_B_T of positions predicting a completion token, their targets_N), from ``labels()``."""
    labels_B_T = batch.labels()
    mask_B_T = labels_B_T != IGNORE_INDEX
    return mask_B_T, labels_B_T[mask_B_T]


def forward_completions(
    model: torch.nn.Module, batch: PaddedBatch, vocab_size: int, hidden: bool = False
) -> CompletionForward:
    """Run ``model`` on ``batch`` and keep its outputs at the completion positions (see module doc).

    ``hidden=False``: logits ``[N, vocab_size]`` (model dtype; computed from the first completion
    position on, where the model takes ``logits_to_keep``). ``hidden=True``: hidden states
    ``[N, D]`` + the sliced LM head, for the chunked loss (the full ``[B, T, V]`` logits never
    exist: only one position's logits are computed, ``logits_to_keep=1``). Gradients flow.
    """
    device = _device_of(model)
    mask_B_T, targets_N = completion_positions(batch)
    ids = batch.input_ids_B_T.to(device)
    attn = batch.attention_mask_B_T.to(device)
    mask_dev = mask_B_T.to(device)
    rows = torch.arange(mask_B_T.shape[0]).unsqueeze(1).expand_as(mask_B_T)[mask_B_T]
    counts = mask_B_T.sum(dim=1).tolist()
    if hidden:
        out = model(input_ids=ids, attention_mask=attn, output_hidden_states=True, logits_to_keep=1)
        hidden_N_D = out.hidden_states[-1][mask_dev]
        return CompletionForward(
            None, hidden_N_D, output_head(model, vocab_size), targets_N.to(device), rows, counts
        )
    # logits only from the first position predicting a completion token on (the prompts' [T, V]
    # logits are never computed): logits_to_keep = K keeps the last K positions
    keep = _first_counted(mask_B_T)
    if keep > 0 and _takes_logits_to_keep(model):
        out = model(input_ids=ids, attention_mask=attn, logits_to_keep=mask_B_T.shape[1] - keep)
        mask_dev = mask_dev[:, keep:]
    else:
        out = model(input_ids=ids, attention_mask=attn)
    logits_B_K_V = out.logits  # (B, K, V): the last K positions
    _check_vocab(logits_B_K_V.shape[-1], vocab_size)
    logits_N_V = logits_B_K_V[mask_dev][:, :vocab_size]
    return CompletionForward(logits_N_V, None, None, targets_N.to(device), rows, counts)


def _first_counted(mask_B_T: torch.Tensor) -> int:
    """The first column with a counted position in any row (0 when none is counted)."""
    cols = mask_B_T.any(dim=0).nonzero()
    return int(cols[0]) if len(cols) else 0


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the transformers model under any DDP/PEFT wrappers accepts ``logits_to_keep``."""
    inner = getattr(model, "module", model)
    get_base = getattr(inner, "get_base_model", None)
    if callable(get_base):
        inner = get_base()
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def _check_vocab(model_vocab: int, vocab_size: int) -> None:
    if model_vocab < vocab_size:
        raise ValueError(
            f"the model outputs {model_vocab} logits but its tokenizer has {vocab_size} tokens; "
            "resize the model's embeddings (model.resize_token_embeddings(len(tokenizer)))"
        )


def output_head(model: torch.nn.Module, vocab_size: int) -> LMHead:
    """The model's LM head sliced to ``vocab_size`` rows, with its final-logit soft-capping
    (``config.final_logit_softcapping``, Gemma-style) and logit scale (``config.logit_scale``)."""
    inner = getattr(model, "module", model)  # DDP wrappers hold the model as .module
    linear = inner.get_output_embeddings()
    _check_vocab(linear.weight.shape[0], vocab_size)
    config = getattr(inner, "config", None)
    # slice only when embedding rows are padded: a slice's backward allocates and zero-fills a
    # full [V_rows, D] gradient and copies into it (for a tied head, a second one per backward)
    full = linear.weight.shape[0] == vocab_size
    weight = linear.weight if full else linear.weight[:vocab_size]
    bias = linear.bias if linear.bias is None or full else linear.bias[:vocab_size]
    return LMHead(
        weight=weight,
        bias=bias,
        logit_scale=float(getattr(config, "logit_scale", None) or 1.0),
        softcap=getattr(config, "final_logit_softcapping", None),
    )


def head_logits(hidden_N_D: torch.Tensor, head: LMHead) -> torch.Tensor:
    """``softcap(logit_scale * (hidden @ weight.T + bias))`` as float32 ``[N, V]``."""
    z = hidden_N_D.float() @ head.weight.float().T
    if head.bias is not None:
        z = z + head.bias.float()
    if head.logit_scale != 1.0:
        z = z * head.logit_scale
    if head.softcap is not None:
        z = head.softcap * torch.tanh(z / head.softcap)
    return z


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def split_rows(values_N: torch.Tensor, num_tokens_B: list[int]) -> list[torch.Tensor]:
    """Packed per-position values -> one tensor per row."""
    return list(torch.split(values_N, num_tokens_B, dim=0))


def with_spare_row(logits_N_V: torch.Tensor) -> torch.Tensor:
    """``[N + 1, V]``: ``logits_N_V`` and one more row. A view (no copy) when the tensor is
    contiguous and its storage holds a row past its end (``spare_row_empty``), else a copy with
    a zero row."""
    N, V = logits_N_V.shape
    start = logits_N_V.storage_offset()
    room = logits_N_V.untyped_storage().nbytes() // max(logits_N_V.element_size(), 1)
    if logits_N_V.is_contiguous() and room >= start + (N + 1) * V:
        return logits_N_V.as_strided((N + 1, V), (V, 1), start)
    return torch.cat([logits_N_V, logits_N_V.new_zeros((1, V))])


def spare_row_empty(N: int, V: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialized ``[N, V]`` tensor (``like``'s dtype, device) whose storage holds a zero
    row after its end, so that ``with_spare_row`` of it is a view."""
    buf = torch.empty((N + 1, V), dtype=like.dtype, device=like.device)
    buf[N].zero_()
    return buf[:N]

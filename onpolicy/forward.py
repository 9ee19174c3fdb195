"""One forward pass of a causal LM over a rollout, kept only at the completion positions.

Everything downstream (teacher scores, objectives) works on *packed* completion positions: the ``N``
positions ``(b, t)`` of ``rollout.to_padded(...)`` whose next token is a completion token, in
row-major order (row 0's completion tokens first). Position ``(b, t)``'s logits predict token
``input_ids[b, t + 1]``. The forward always goes through ``model(...)`` itself (so DDP/FSDP wrappers
see it), and logits are sliced to ``vocab_size`` (padded embedding rows never count).
"""

from __future__ import annotations

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

    ``hidden=False``: logits ``[N, vocab_size]`` (model dtype). ``hidden=True``: hidden states
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
    logits_B_T_V = model(input_ids=ids, attention_mask=attn).logits
    _check_vocab(logits_B_T_V.shape[-1], vocab_size)
    logits_N_V = logits_B_T_V[mask_dev][:, :vocab_size]
    return CompletionForward(logits_N_V, None, None, targets_N.to(device), rows, counts)


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
    bias = None if linear.bias is None else linear.bias[:vocab_size]
    return LMHead(
        weight=linear.weight[:vocab_size],
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

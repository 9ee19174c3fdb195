"""Span math: chain-rule span log-probabilities and span distributions, batched (no loop per
token or span). Which tokens form a span is ``alignment.spans.align``.

Conventions (the logit shift):
    ``logits_B_T_V[:, t]`` is a causal LM's output at position ``t``: the distribution of token
    ``t + 1``. So the distribution that predicts token ``t`` lives at position ``t - 1``, and token
    0 has none. ``token_logp_B_T[:, t]`` is the log-probability of token ``input_ids[:, t]``
    itself (aligned to tokens, not to logits): ``log_softmax(logits[:, t - 1])[input_ids[:, t]]``.
    ``span_B_T[:, t]`` is the span of token ``t`` (``alignment.align_spans``), ``-1`` for none;
    spans are numbered ``0 .. S - 1`` per row and each covers consecutive tokens.

Worked example. A prompt ``x0 x1 x2`` and a completion "Hello" that the student writes as
``x3 = "He"``, ``x4 = "llo"`` and the teacher as ``"Hel" "lo"``: the whole word is one span, so
``span_B_T = [[-1, -1, -1, 0, 0]]``. The chain rule gives

    log P(span 0) = token_logp[3] + token_logp[4]
                  = log_softmax(logits[2])[x3] + log_softmax(logits[3])[x4].

The span distribution anchored on the *first* token (``anchor="first"``, the default) is

    log q_0[w] = log_softmax(logits[2])[w] + token_logp[4]

(the distribution over the span's first token given the prefix, logits at position 2 = first
token position - 1, scaled by the chain-rule probability of the rest of the span); at the sampled
``w = x3`` it equals ``log P(span 0)``. With ``anchor="last"`` it is
``log_softmax(logits[3])[w] + token_logp[3]``: the joint probability of ``x3`` followed by ``w``,
again ``log P(span 0)`` at ``w = x4``. Unnormalized: a row sums to ``P(rest of the span)`` (first)
or ``P(span without its last token)`` (last); ``normalize=True`` divides the scale out, leaving
the anchor token's own next-token distribution. A one-token span gives that distribution in both.

TRL's GOLD (``ULDLoss``, TRL 1.16) merges the same way, but its default ``"observed"`` strategy
slices ``logits[start : start + size]`` for answer tokens ``input_ids[start : start + size]``:
the row paired with token ``start + k`` is the one predicting token ``start + k + 1``, one position
to the right, both for the "first position's distribution" and for the scalar factors. Its
``"bayesian"`` option shifts the slice to ``start - 1`` (correct) and anchors on the last token,
which is ``anchor="last"`` here.
"""

from __future__ import annotations

from typing import Literal

import torch

from alignment.divergence import token_logprobs as _logprobs_at
from alignment.errors import AlignmentError

Anchor = Literal["first", "last"]


def token_logprobs(
    logits_B_T_V: torch.Tensor, input_ids_B_T: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """float32 [B, T] log-probability of each token under the logits one position to its left.

    ``out[:, t] = log_softmax(logits[:, t - 1] / temperature)[input_ids[:, t]]`` for ``t >= 1``;
    ``out[:, 0] = 0`` (no predicting logits). Computed as gather minus logsumexp, so no [B, T, V]
    log-softmax is kept for backward.
    """
    if logits_B_T_V.shape[:2] != input_ids_B_T.shape:
        raise AlignmentError(
            f"logits {tuple(logits_B_T_V.shape)} and input_ids {tuple(input_ids_B_T.shape)} "
            "disagree on [B, T]; pass the logits of the same padded batch"
        )
    if temperature <= 0:
        raise AlignmentError(f"temperature={temperature} must be > 0")
    logp = _logprobs_at(logits_B_T_V[:, :-1], input_ids_B_T[:, 1:], temperature)
    return torch.nn.functional.pad(logp, (1, 0))


def count_spans(span_B_T: torch.Tensor) -> int:
    """``S``: one more than the largest span index in the batch (0 if no token has a span)."""
    return int(span_B_T.max()) + 1 if span_B_T.numel() else 0


def _flat_index(span_B_T: torch.Tensor, S: int) -> torch.Tensor:
    """int64 [B * T] index into a flat [B * S + 1] buffer; tokens without a span go to the last."""
    if span_B_T.dtype not in (torch.int32, torch.int64):
        raise AlignmentError(f"span ids must be an integer tensor, got {span_B_T.dtype}")
    if span_B_T.numel() and (int(span_B_T.min()) < -1 or int(span_B_T.max()) >= S):
        raise AlignmentError(
            f"span ids must lie in [-1, {S - 1}] (num_spans={S}); got "
            f"[{int(span_B_T.min())}, {int(span_B_T.max())}]"
        )
    B = span_B_T.shape[0]
    rows = torch.arange(B, device=span_B_T.device).unsqueeze(1) * S
    span = span_B_T.long()
    return torch.where(span >= 0, rows + span, B * S).reshape(-1)


def span_logprobs(
    token_logp_B_T: torch.Tensor, span_B_T: torch.Tensor, num_spans: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain rule: the log-probability of each span is the sum of its tokens' log-probabilities.

    Args:
        token_logp_B_T: float [B, T] log-prob of each token (see the module convention).
        span_B_T: int [B, T] span index per token, ``-1`` for none.
        num_spans: ``S`` (default: ``count_spans(span_B_T)``).

    Returns:
        ``(span_logp_B_S, mask_B_S)``: segment sums (one ``index_add``, differentiable) and True
        where the span has at least one token. Empty spans give 0.
    """
    if token_logp_B_T.shape != span_B_T.shape:
        raise AlignmentError(
            f"token log-probs {tuple(token_logp_B_T.shape)} and span ids "
            f"{tuple(span_B_T.shape)} must have the same [B, T] shape"
        )
    B = span_B_T.shape[0]
    S = count_spans(span_B_T) if num_spans is None else num_spans
    idx = _flat_index(span_B_T, S)
    flat = token_logp_B_T.new_zeros(B * S + 1).index_add(0, idx, token_logp_B_T.reshape(-1))
    count = torch.zeros(B * S + 1, dtype=torch.long, device=idx.device)
    count.index_add_(0, idx, torch.ones_like(idx))
    return flat[:-1].reshape(B, S), (count[:-1] > 0).reshape(B, S)


def span_sampled_reward(
    student_span_logp_B_S: torch.Tensor,
    teacher_span_logp_B_S: torch.Tensor,
    mask_B_S: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, S] per-span reward ``log P_teacher(span) - log P_student(span)``, 0 where masked.

    ``mask_B_S`` (optional): spans that count; ``span_logprobs`` already gives 0 to empty spans.

    Both sides score the same bytes, so the sum over a row's spans is
    ``log P_teacher(text) - log P_student(text)`` on the sampled completion, whatever the two
    tokenizations: minus the single-sample estimate of the reverse KL(student || teacher), exact on
    the sampled text. Not detached: detach the result to use it as an advantage.
    """
    if student_span_logp_B_S.shape != teacher_span_logp_B_S.shape:
        raise AlignmentError(
            f"student spans {tuple(student_span_logp_B_S.shape)} != teacher spans "
            f"{tuple(teacher_span_logp_B_S.shape)}; compute both with the same num_spans"
        )
    diff = teacher_span_logp_B_S - student_span_logp_B_S
    if mask_B_S is None:
        return diff
    return torch.where(mask_B_S, diff, torch.zeros((), dtype=diff.dtype, device=diff.device))


def span_anchor_positions(
    span_B_T: torch.Tensor, anchor: Anchor = "first", num_spans: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pos_B_S, mask_B_S)``: the position of each span's first (or last) token.

    Masked (empty) spans get position 0. One ``scatter_reduce`` (amin / amax), no loop.
    """
    if anchor not in ("first", "last"):
        raise AlignmentError(f"anchor={anchor!r} must be 'first' or 'last'")
    B, T = span_B_T.shape
    S = count_spans(span_B_T) if num_spans is None else num_spans
    idx = _flat_index(span_B_T, S)
    pos_T = torch.arange(T, device=span_B_T.device).expand(B, T).reshape(-1)
    fill = T if anchor == "first" else -1
    out = torch.full((B * S + 1,), fill, dtype=torch.long, device=span_B_T.device)
    out.scatter_reduce_(0, idx, pos_T, reduce="amin" if anchor == "first" else "amax")
    out = out[:-1].reshape(B, S)
    mask = out != fill
    return torch.where(mask, out, 0), mask


def span_values_to_tokens(values_B_S: torch.Tensor, span_B_T: torch.Tensor) -> torch.Tensor:
    """[B, T] each span's value placed on the span's last token, 0 on every other token.

    The per-token sum over a row equals the per-span sum (e.g. a span reward as a token reward).
    """
    pos_B_S, mask_B_S = span_anchor_positions(span_B_T, "last", values_B_S.shape[1])
    out = values_B_S.new_zeros(span_B_T.shape)
    vals = torch.where(mask_B_S, values_B_S, torch.zeros((), dtype=values_B_S.dtype))
    return out.scatter_add(1, pos_B_S, vals)


def span_log_scale(
    token_logp_B_T: torch.Tensor,
    span_B_T: torch.Tensor,
    anchor: Anchor = "first",
    num_spans: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a span distribution needs: ``(row_B_S, log_scale_B_S, mask_B_S)``.

    ``row_B_S = anchor position - 1``: the logits row holding the anchor token's distribution.
    ``log_scale_B_S = log P(span) - token_logp[anchor]``: the chain-rule log-probability of the
    span's other tokens (differentiable). Masked spans get row 0 and scale 0.
    Raises if a span contains token 0 (no logits predict it).
    """
    if span_B_T.numel() and bool((span_B_T[:, 0] >= 0).any()):
        raise AlignmentError(
            "token 0 is in a span but no logits predict it; give the prompt (or BOS) span -1"
        )
    S = count_spans(span_B_T) if num_spans is None else num_spans
    span_logp, mask = span_logprobs(token_logp_B_T, span_B_T, S)
    pos, _ = span_anchor_positions(span_B_T, anchor, S)
    anchor_logp = token_logp_B_T.gather(1, pos)
    zero = torch.zeros((), dtype=span_logp.dtype, device=span_logp.device)
    log_scale = torch.where(mask, span_logp - anchor_logp, zero)
    return torch.where(mask, pos - 1, 0), log_scale, mask


def span_distributions(
    logits_B_T_V: torch.Tensor,
    input_ids_B_T: torch.Tensor,
    span_B_T: torch.Tensor,
    anchor: Anchor = "first",
    normalize: bool = False,
    temperature: float = 1.0,
    num_spans: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log of each span's merged distribution over the anchor token (module docstring).

    Returns:
        ``(log_q_B_S_V, mask_B_S)``: float32 (or float64) ``log q``; unnormalized (a row's total
        is the chain-rule probability of the span's other tokens) unless ``normalize``. Rows of
        masked spans are finite filler. This materializes [B, S, V]; the losses in
        ``alignment.spans.gold`` compute the same quantities a chunk of rows at a time.
    """
    logp = token_logprobs(logits_B_T_V, input_ids_B_T, temperature)
    row_B_S, log_scale_B_S, mask = span_log_scale(logp, span_B_T, anchor, num_spans)
    B, _, V = logits_B_T_V.shape
    z = logits_B_T_V.gather(1, row_B_S.unsqueeze(-1).expand(B, row_B_S.shape[1], V))
    log_q = torch.log_softmax(z.to(logp.dtype) / temperature, dim=-1)
    if not normalize:
        log_q = log_q + log_scale_B_S.unsqueeze(-1)
    return log_q, mask

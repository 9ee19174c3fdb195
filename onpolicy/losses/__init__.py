"""Divergences between student and teacher next-token distributions.

- dense, from logits ``[..., T, V]``: ``generalized_jsd``, ``forward_kl``, ``reverse_kl``,
  ``skew_kl``, ``total_variation``, ``divergence`` (any registered name);
- sparse teacher (top-k ids + logprobs + tail bucket): ``sparse_divergence``;
- chunked, from hidden states and LM heads, never holding full logits: ``chunked_divergence``
  (dense teacher), ``chunked_topk_divergence`` (top-k teacher);
- sampled-token estimator: ``token_logprobs`` (+ ``token_logprobs_chunked``),
  ``sampled_token_reward``, ``policy_gradient_loss``;
- global token normalization: ``count_tokens``, ``global_token_count``, ``token_normalized``.

Where the math lives: ``alignment`` is the lower layer (it never imports ``onpolicy``), so the math
both packages need (sampled-token log-probs, the generalized JSD on log-prob rows and on positive
measures) has its one home in ``alignment.divergence``; this package validates and re-exports it,
and keeps the token-level losses and their fused kernels (closed-form gradients, ``kernels``),
which the tests check against float64 autograd. ``alignment`` keeps the span-level forms.

All math in float32 (float64 if given). Reductions: ``mean`` (over counted positions; 0 when none
count), ``sum``, ``none`` (per position, zero where masked).
"""

from onpolicy.losses.chunked import LMHead, chunked_divergence
from onpolicy.losses.chunked_topk import chunked_topk_divergence
from onpolicy.losses.divergences import (
    divergence,
    forward_kl,
    generalized_jsd,
    log_probs,
    reverse_kl,
    skew_kl,
    total_variation,
)
from onpolicy.losses.kernels import DIVERGENCES, DivergenceKernel
from onpolicy.losses.normalize import count_tokens, global_token_count, token_normalized
from onpolicy.losses.reduce import Reduction, reduce_per_token
from onpolicy.losses.sampled import (
    policy_gradient_loss,
    sampled_token_reward,
    token_logprobs,
    token_logprobs_chunked,
)
from onpolicy.losses.sparse import sparse_divergence, teacher_tail_logprob

__all__ = [
    "DIVERGENCES",
    "DivergenceKernel",
    "LMHead",
    "Reduction",
    "chunked_divergence",
    "chunked_topk_divergence",
    "count_tokens",
    "divergence",
    "forward_kl",
    "generalized_jsd",
    "global_token_count",
    "log_probs",
    "policy_gradient_loss",
    "reduce_per_token",
    "reverse_kl",
    "sampled_token_reward",
    "skew_kl",
    "sparse_divergence",
    "teacher_tail_logprob",
    "token_logprobs",
    "token_logprobs_chunked",
    "token_normalized",
    "total_variation",
]

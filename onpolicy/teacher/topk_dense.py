"""A full-vocabulary teacher distribution rebuilt from top-k log-probabilities (+ the tail mass).

A served teacher (vLLM ``prompt_logprobs=k``) returns, per position, its ``k`` most likely tokens'
log-probabilities and the log-probability of the token actually there. The cross-tokenizer
objectives (``next_byte``, ``gold``, ``uld``) need a distribution over the teacher's whole
vocabulary (byte masses, sorted probabilities, matched-vocabulary pairs), so this module defines
the approximation they use:

    q(v) = p(v)                               for v in the known set K (top-k and the actual token)
    q(v) = (1 - sum_{u in K} p(u)) / (V - |K|) otherwise ("uniform" tail)

or, with ``tail="renorm"``, the known set renormalized to ``1 - eps`` and ``eps`` spread over the
rest (``eps = min_tail_mass``): the tail's mass is dropped instead of smeared.

Both sum to one and are exact at ``k = V``; ``uniform`` also keeps every known log-probability
exact (the actual token's too: the sampled-token signal and its span chain rule are unchanged).
The error against the full teacher on the real SmolLM2 / Gemma-3 pair is measured by
``benchmarks/topk_cross_error.py`` (``docs/results/topk-cross-teacher.md``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

TailMode = Literal["uniform", "renorm"]


def dense_from_topk(
    topk_ids_N_K: torch.Tensor,
    topk_logprobs_N_K: torch.Tensor,
    vocab_size: int,
    token_ids_N: torch.Tensor | None = None,
    token_logprobs_N: torch.Tensor | None = None,
    tail: TailMode = "uniform",
    min_tail_mass: float = 1e-8,
) -> torch.Tensor:
    """float32 ``[N, V]`` log-probabilities ``log q`` (see the module docstring).

    Args:
        topk_ids_N_K: int64 ``[N, K]`` the teacher's top-k token ids per position (ids ``>= V``,
            e.g. an engine's padded vocabulary rows, count as tail).
        topk_logprobs_N_K: ``[N, K]`` their log-probabilities (temperature 1).
        vocab_size: ``V``.
        token_ids_N / token_logprobs_N: optional ``[N]`` actual token at each position and its
            exact log-probability (joins the known set).
        tail: ``uniform`` (tail mass spread evenly) or ``renorm`` (known set renormalized).
        min_tail_mass: floor of the tail mass (float rounding can make ``sum p`` exceed 1).
    """
    if tail not in ("uniform", "renorm"):
        raise ValueError(f"tail={tail!r}; use 'uniform' or 'renorm'")
    N, V = topk_ids_N_K.shape[0], vocab_size
    ids = [topk_ids_N_K.long()]
    lps = [topk_logprobs_N_K.float()]
    if token_ids_N is not None and token_logprobs_N is not None:
        ids.append(token_ids_N.long()[:, None])
        lps.append(token_logprobs_N.float()[:, None])
    ids_N_J = torch.cat(ids, dim=1)
    ids_N_J = torch.where(ids_N_J < V, ids_N_J, V)  # out-of-vocabulary ids -> a dropped column
    out = torch.full((N, V + 1), -math.inf, dtype=torch.float32, device=ids_N_J.device)
    out.scatter_(1, ids_N_J, torch.cat(lps, dim=1).to(out.device))  # (N, V + 1)
    known = torch.zeros((N, V + 1), dtype=torch.bool, device=out.device)
    known.scatter_(1, ids_N_J, True)
    out, known = out[:, :V], known[:, :V]  # (N, V)
    n_rest = (V - known.sum(-1)).clamp(min=1).double()  # (N,)
    mass = torch.logsumexp(out.double(), dim=-1).exp()  # known mass (a token counted once)
    if tail == "uniform":
        rest_lp = ((-mass + 1.0).clamp(min=min_tail_mass).log() - n_rest.log()).float()
        return torch.where(known, out, rest_lp[:, None])
    scale = (math.log1p(-min_tail_mass) - mass.log()).float()  # known mass -> 1 - eps
    rest_lp = (math.log(min_tail_mass) - n_rest.log()).float()
    return torch.where(known, out + scale[:, None], rest_lp[:, None])

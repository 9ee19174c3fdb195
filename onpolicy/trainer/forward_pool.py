"""The forward measure (``eval.forward_nll``): the student's negative log-likelihood of a fixed pool
of held-out teacher samples, per token and per UTF-8 byte.

Reverse KL (on-policy distillation) is mode-seeking: a student can keep its exact match while it
stops covering completions the teacher would give. The pool measures that coverage: the teacher's
temperature-1 completions of the held-out prompts (one per prompt, never trained on), drawn once per
run with the fixed seed ``POOL_SEED`` (the same pool for every method and seed of a comparison;
shared through the fixed-sample disk cache, ``sample_cache.py``, when it is on). At each evaluation
the student is teacher-forced on them and

    eval/forward_nll_per_token = - sum_rows sum_t log p_student(y_t | x, y_<t) / completion tokens
    eval/forward_nll_per_byte  = the same sum / UTF-8 bytes of the completions' text

(``y``: the sample in the student's tokens, its stop token included when the teacher stopped, as
the trained completions; across tokenizers the sample's text tokenized by the student, so per byte
(KL/char's unit) is the measure that compares students with different tokenizers). Drawing the pool
is evaluation compute: not counted in the run's FLOPs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import torch

from onpolicy.types import PaddedBatch, Prompt, Rollout, SamplingParams

POOL_SEED = 7_919  # the pool's sampling seed: independent of the runs' seeds


def nll_sum(logits_N_V: torch.Tensor, targets_N: torch.Tensor) -> float:
    """``-sum_n log softmax(logits_N_V[n])[targets_N[n]]``: the summed negative log-likelihood of
    ``N`` target tokens.

    Args:
        logits_N_V: ``[N, V]`` logits predicting each target (any float dtype; the log-softmax is
            taken in float32 a chunk of rows at a time, ``token_logprobs_chunked``).
        targets_N: ``[N]`` int64 target ids in ``[0, V)``.

    Returns:
        The sum as a Python float (accumulated in float64); 0.0 for ``N == 0``.
    """
    from onpolicy.losses import token_logprobs_chunked

    if targets_N.numel() == 0:
        return 0.0
    return -float(token_logprobs_chunked(logits_N_V, targets_N).double().sum())


def forward_measure(nll: float, tokens: float, nbytes: float) -> dict[str, float]:
    """The two metrics of the module docstring from the pool's sums (empty when nothing was
    scored)."""
    if tokens <= 0:
        return {}
    return {
        "eval/forward_nll_per_token": nll / tokens,
        "eval/forward_nll_per_byte": nll / max(nbytes, 1.0),
    }


def pool_sums(
    model: torch.nn.Module, tokenizer: Any, pool: Rollout, batch_size: int = 8
) -> tuple[float, float, float]:
    """``(nll, tokens, bytes)`` of ``model`` teacher-forced on every row of ``pool`` (a ``Rollout``
    in the model's tokens), ``batch_size`` rows per forward; no gradient."""
    from onpolicy.forward import forward_completions
    from onpolicy.models import output_vocab_size

    vocab = min(len(tokenizer), output_vocab_size(model))
    nll, tokens = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(pool), batch_size):
            prompts_B = pool.prompt_ids_B[s : s + batch_size]
            completions_B = pool.completion_ids_B[s : s + batch_size]
            if not any(completions_B):
                continue
            batch = PaddedBatch.from_ragged(prompts_B, completions_B, tokenizer.pad_token_id)
            fwd = forward_completions(model, batch, vocab)
            nll += nll_sum(fwd.logits_N_V, fwd.targets_N)
            tokens += float(fwd.targets_N.numel())
    nbytes = float(sum(len(t.encode("utf-8")) for t in pool.texts_B))
    return nll, tokens, nbytes


def draw_pool(
    held_out: Sequence[Prompt], sampling: SamplingParams, sources: Any, teacher_model: Any = None
) -> Rollout | None:
    """The pool: one temperature-1 teacher sample per held-out prompt (``POOL_SEED``), as a
    ``Rollout`` in the student's tokens; None without held-out prompts or a teacher sampler.
    ``sampling``: the run's (its ``max_new_tokens`` and stop settings; temperature 1, no top-p /
    top-k, one sample). ``sources``: the trainer's ``SampleSources``; ``teacher_model``: the
    teacher's weights, the key of the disk cache (``sample_cache.py``, opt-in by its variable)."""
    from onpolicy.chat import render_prompt
    from onpolicy.trainer.sample_cache import ENV, cached_draw, draw_key
    from onpolicy.trainer.sources import (
        DRAW_CHUNK,
        _fixed_rollout,
        draw_teacher_samples,
        prompt_key,
    )

    if not held_out or sources.teacher_backend is None:
        return None
    held_out = list(held_out)
    sampling = dataclasses.replace(sampling, temperature=1.0, top_p=1.0, top_k=0, n=1, seed=None)

    def draw():
        return draw_teacher_samples(held_out, sampling, sources, POOL_SEED)

    if os.environ.get(ENV) and isinstance(teacher_model, torch.nn.Module):
        key = draw_key(
            teacher_model, [prompt_key(p) for p in held_out], sampling=repr(sampling),
            seed=POOL_SEED, chunk=DRAW_CHUNK, same_tokenizer=sources.same_tokenizer,
            purpose="forward_pool",
        )  # fmt: skip
        fixed, _ = cached_draw(key, draw)
    else:
        fixed, _ = draw()  # evaluation compute: not added to the run's budget
    src = dataclasses.replace(sources, fixed_teacher=fixed)
    ids = [render_prompt(sources.tokenizer, p) for p in held_out]
    return _fixed_rollout(held_out, ids, src)

"""Held-out evaluation shared by every method: task score, KL to the teacher, agreement with the
teacher's greedy answers, the greedy completions' repetition rate and share cut at the length limit
(a student collapsed into loops shows there, whatever its KL), and the deployment view (size,
latency, throughput).

KL to the teacher is tokenizer-independent: a Monte-Carlo estimate of the sequence-level reverse KL
``E_{y ~ student}[log p_student(y|x) - log p_teacher(y|x)]`` (one sample per held-out prompt at
temperature 1, each model scoring the same text with its own tokenizer), divided by the completions'
mean length in characters (nats per character), so students with different tokenizers compare.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from onpolicy.tasks.base import Task
from onpolicy.types import PaddedBatch, Prompt, Rollout, SamplingParams


@dataclass
class EvalResult:
    """Held-out metrics of one model (see the module docstring for ``kl_per_char``)."""

    score: float | None
    kl_per_char: float | None
    agreement: float | None
    latency_s: float
    tokens_per_s: float
    texts: list[str]
    repetition: float | None = None  # completion_diagnostics of the greedy completions
    cut_share: float | None = None


def completion_diagnostics(
    completion_ids_B: Sequence[Sequence[int]], finish_reason_B: Sequence[str], n: int = 3
) -> tuple[float, float]:
    """``(repetition, cut_share)`` of ``B`` completions: the share of their ``n``-grams that
    already occurred earlier in the same completion (``trainer.diagnostics.repetition_rate``, the
    trainer's ``eval/repetition_rate``), and the share of completions cut at the length limit
    (finish reason ``"length"``; the trainer's ``eval/truncated_share``); ``(0.0, 0.0)`` for
    none."""
    from onpolicy.trainer.diagnostics import repetition_rate

    rows = len(finish_reason_B)
    cut = sum(r == "length" for r in finish_reason_B) / rows if rows else 0.0
    return repetition_rate(completion_ids_B, n), cut


def text_logprobs(
    model: torch.nn.Module,
    tok: Any,
    prompts: Sequence[Prompt],
    texts: Sequence[str],
    stopped: Sequence[bool],
    batch_size: int = 64,
) -> list[float]:
    """``log p(text | prompt)`` per row under ``model`` with its own tokenizer and prompt rendering
    (plus its stop token where the completion ``stopped``), float32."""
    from onpolicy.api import completion_rollout
    from onpolicy.forward import forward_completions
    from onpolicy.losses import token_logprobs_chunked
    from onpolicy.models import output_vocab_size

    out: list[float] = []
    for s in range(0, len(prompts), batch_size):
        p, t, st = (
            prompts[s : s + batch_size],
            texts[s : s + batch_size],
            stopped[s : s + batch_size],
        )
        ro = completion_rollout(list(p), list(t), tok)
        rows = [c if keep else c[:-1] for c, keep in zip(ro.completion_ids_B, st, strict=True)]
        batch = PaddedBatch.from_ragged(ro.prompt_ids_B, rows, tok.pad_token_id)
        with torch.no_grad():
            fwd = forward_completions(model, batch, min(len(tok), output_vocab_size(model)))
        lp_N = token_logprobs_chunked(fwd.logits_N_V, fwd.targets_N)
        out.extend(float(x.sum()) for x in lp_N.split(fwd.num_tokens_B))
    return out


def _generate(model: Any, tok: Any, prompts: Sequence[Prompt], sampling: SamplingParams) -> Rollout:
    from onpolicy.api import rollout
    from onpolicy.rollout.base import make_backend

    backend = make_backend("hf", model=model, tokenizer=tok, max_batch_size=256)
    with torch.no_grad():
        return rollout(backend, prompts, tok, sampling)


def evaluate_model(
    model: torch.nn.Module,
    tok: Any,
    task: Task,
    max_new_tokens: int,
    teacher: tuple[torch.nn.Module, Any] | None = None,
    teacher_texts: Sequence[str] | None = None,
    seed: int = 0,
) -> EvalResult:
    """Greedy completions on ``task.eval_prompts`` -> score, agreement with ``teacher_texts``,
    throughput; one sampled completion per prompt -> KL to ``teacher`` (None without one)."""
    prompts = list(task.eval_prompts)
    model.eval()
    start = time.perf_counter()
    greedy = _generate(model, tok, prompts, SamplingParams(max_new_tokens, temperature=0.0))
    gen_s = time.perf_counter() - start
    repetition, cut_share = completion_diagnostics(greedy.completion_ids_B, greedy.finish_reason_B)
    new_tokens = sum(len(c) for c in greedy.completion_ids_B)
    latency = []
    for p in prompts[:3]:
        t0 = time.perf_counter()
        _generate(model, tok, [p], SamplingParams(max_new_tokens, temperature=0.0))
        latency.append(time.perf_counter() - t0)
    agreement = None
    if teacher_texts is not None:
        agreement = sum(
            a.strip() == b.strip() for a, b in zip(greedy.texts_B, teacher_texts, strict=True)
        ) / len(prompts)
    kl = None
    if teacher is not None:
        torch.manual_seed(seed)
        sample = _generate(model, tok, prompts, SamplingParams(max_new_tokens, temperature=1.0))
        stopped = [r == "stop" for r in sample.finish_reason_B]
        lp_s = text_logprobs(model, tok, prompts, sample.texts_B, stopped)
        lp_t = text_logprobs(teacher[0], teacher[1], prompts, sample.texts_B, stopped)
        chars = sum(len(t) + 1 for t in sample.texts_B)
        kl = (sum(lp_s) - sum(lp_t)) / chars
    return EvalResult(
        score=task.mean_score(greedy.texts_B, prompts),
        kl_per_char=kl,
        agreement=agreement,
        latency_s=statistics.median(latency),
        tokens_per_s=new_tokens / max(gen_s, 1e-9),
        texts=list(greedy.texts_B),
        repetition=repetition,
        cut_share=cut_share,
    )


def size_on_disk(folder: str | Path) -> int:
    """Bytes of the weight files (``*.safetensors``, ``*.bin``, ``*.gguf``) in a model folder."""
    folder = Path(folder)
    return sum(
        f.stat().st_size
        for pattern in ("*.safetensors", "*.bin", "*.gguf")
        for f in folder.glob(pattern)
    )


def num_params(model: torch.nn.Module) -> int:
    """Parameters of ``model`` (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

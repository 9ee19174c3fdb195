"""The ``hf`` rollout backend: transformers ``generate`` on the training model itself (KV cache on).

Batched with left padding; ``sampling.n`` copies of each prompt (prompt-major). The engine's
logprobs are read from the raw logits before temperature/top-k/top-p (a logits processor that
transformers runs before its sampling warpers; the checkpoint's own processors are switched off,
see ``_neutral_generation_config``), so they are the temperature-1 policy's log-probabilities, what
the student's own forward pass computes. Only one step's ``[B, V]`` log-probabilities are held at a
time (``output_logits=True`` would keep ``[steps, B, V]``: 10 GB for 64 rows x 256 tokens at
Qwen's 152k vocabulary).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from onpolicy.chat import stop_token_ids
from onpolicy.errors import ConfigError
from onpolicy.rollout.base import check_prompt_count, register_backend, timing_metrics
from onpolicy.types import FinishReason, Prompt, Rollout, SamplingParams


@register_backend("hf")
class HFRolloutBackend:
    """Samples with ``model.generate`` (the student module; weights are shared, so ``sync_weights``
    has nothing to copy).

    Args:
        model: the student (a transformers causal LM, PEFT-wrapped or not).
        tokenizer: the student's tokenizer (pad token, decoding, stop strings).
        stop_ids: ids that always end a completion; default: EOS + the chat template's end of turn
            + the model's ``generation_config.eos_token_id`` (see ``onpolicy.chat.stop_token_ids``).
        max_batch_size: sequences per ``generate`` call (bounds the ``[steps, B, V]`` logits kept).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        stop_ids: Sequence[int] | None = None,
        max_batch_size: int = 64,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = (
            tuple(stop_ids) if stop_ids is not None else stop_token_ids(tokenizer, model)
        )
        self.max_batch_size = max_batch_size
        self.policy_version = 0

    def generate(
        self,
        prompt_ids_B: Sequence[Sequence[int]],
        sampling: SamplingParams,
        prompts: Sequence[Prompt] | None = None,
    ) -> Rollout:
        """Sample ``sampling.n`` completions per prompt (see ``Rollout`` for each row's fields)."""
        _check_sampling(sampling)
        check_prompt_count(prompt_ids_B, prompts)
        rows = [list(p) for p in prompt_ids_B for _ in range(sampling.n)]
        if any(len(r) == 0 for r in rows):
            raise ConfigError("a rendered prompt is empty; every prompt needs at least one token")
        stops = tuple(dict.fromkeys([*self.stop_ids, *sampling.stop_token_ids]))
        start = time.perf_counter()
        completions: list[list[int]] = []
        logprobs: list[list[float]] = []
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling (LoRA dropout included)
        try:
            device = next(self.model.parameters()).device
            cuda = [device.index or 0] if device.type == "cuda" else []
            # a seed never disturbs the caller's RNG; without one, sampling draws from (and
            # advances) the global RNG, so successive rollouts get fresh randomness
            seeded = sampling.seed is not None
            with torch.random.fork_rng(devices=cuda, enabled=seeded):
                if seeded:
                    torch.manual_seed(sampling.seed)
                for i in range(0, len(rows), self.max_batch_size):
                    ids, lps = self._generate_chunk(
                        rows[i : i + self.max_batch_size], sampling, stops
                    )
                    completions += ids
                    logprobs += lps
        finally:
            self.model.train(was_training)
        cut = [
            _cut(c, lp, stops, sampling, self.tokenizer)
            for c, lp in zip(completions, logprobs, strict=True)
        ]
        seconds = time.perf_counter() - start
        return Rollout(
            prompts=list(prompts) if prompts is not None else [],
            prompt_index_B=[i for i in range(len(prompt_ids_B)) for _ in range(sampling.n)],
            prompt_ids_B=rows,
            completion_ids_B=[c[0] for c in cut],
            sampling_logprobs_B=[c[1] for c in cut],
            finish_reason_B=[c[2] for c in cut],
            texts_B=[self.tokenizer.decode(c[0], skip_special_tokens=True) for c in cut],
            policy_version=self.policy_version,
            metrics=timing_metrics([c[0] for c in cut], seconds),
        )

    @torch.no_grad()
    def _generate_chunk(
        self, rows: list[list[int]], sampling: SamplingParams, stops: tuple[int, ...]
    ) -> tuple[list[list[int]], list[list[float]]]:
        """One left-padded ``generate`` call -> raw new tokens and their logprobs per row."""
        from transformers import GenerationConfig

        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        P = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), P), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), P), dtype=torch.long)
        for b, r in enumerate(
            rows
        ):  # left padding: the last prompt token sits at P - 1 in every row
            input_ids[b, P - len(r) :] = torch.tensor(r, dtype=torch.long)
            attention[b, P - len(r) :] = 1
        greedy = sampling.temperature == 0
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else sampling.top_k,
            eos_token_id=list(stops),
            pad_token_id=pad,
            use_cache=True,
            return_dict_in_generate=True,
            stop_strings=list(sampling.stop_strings) or None,
        )
        # min_new_tokens: stops masked by the recorder itself, after it read the raw logprobs
        recorder = _LogprobRecorder(stops, sampling.min_new_tokens)
        with _neutral_generation_config(self.model):
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=config,
                logits_processor=[recorder],
                tokenizer=self.tokenizer if sampling.stop_strings else None,
            )
        new_B_T = out.sequences[:, P:]  # (B, steps)
        logprobs_B_T = recorder.finish(out.sequences)  # (B, steps)
        assert logprobs_B_T.shape == new_B_T.shape, (logprobs_B_T.shape, new_B_T.shape)
        return new_B_T.cpu().tolist(), logprobs_B_T.cpu().tolist()

    def sync_weights(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """Nothing to copy: the backend samples from the training module itself."""
        if model is not self.model:
            self.model = model
        self.policy_version = step
        return {"sync/seconds": 0.0}

    def close(self) -> None:
        """Drop the reference to the model."""
        self.model = None


@contextlib.contextmanager
def _neutral_generation_config(model: Any) -> Iterator[None]:
    """Inside the block the model's own ``generation_config`` holds token ids only: transformers
    fills every option left unset (None) from it, so a checkpoint's shipped defaults (Qwen's
    ``repetition_penalty``, ``top_k``, ``suppress_tokens``, ...) would silently change what
    ``SamplingParams`` asks for."""
    from transformers import GenerationConfig

    holders = [model]
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):  # PEFT: the wrapped transformers model generates
        holders.append(get_base())
    saved = [(h, h.generation_config) for h in holders if getattr(h, "generation_config", None)]
    for holder, config in saved:
        holder.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id, decoder_start_token_id=config.decoder_start_token_id,
        )  # fmt: skip
    try:
        yield
    finally:
        for holder, config in saved:
            holder.generation_config = config


class _LogprobRecorder:
    """A logits processor that keeps the log-probability of each sampled token under the raw
    logits it sees (transformers runs custom processors before temperature/top-k/top-p).

    At step ``t`` it holds ``log_softmax(raw logits_t)`` [B, V]; at step ``t + 1`` the token chosen
    at ``t`` is the last column of ``input_ids``, gathered then; ``finish`` gathers the last one.
    During the first ``min_new_tokens`` steps it returns the scores with the ``stops`` columns at
    ``-inf`` (so no stop is sampled), having read the logprobs before masking (transformers' own
    ``min_new_tokens`` processor runs first and would hide the stop tokens' mass from them).
    """

    def __init__(self, stops: tuple[int, ...] = (), min_new_tokens: int = 0) -> None:
        self.prev_B_V: torch.Tensor | None = None
        self.taken: list[torch.Tensor] = []  # [B] per step
        self.stops = list(stops)
        self.min_new_tokens = min_new_tokens
        self.steps = 0
        self._stop_idx: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prev_B_V is not None:
            self.taken.append(self.prev_B_V.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev_B_V = torch.log_softmax(scores.float(), dim=-1)
        self.steps += 1
        if self.steps <= self.min_new_tokens and self.stops:
            if self._stop_idx is None:  # made on the scores' device once: no copy per step
                kept = [s for s in self.stops if s < scores.shape[-1]]
                self._stop_idx = torch.tensor(kept, dtype=torch.long, device=scores.device)
            scores = scores.index_fill(1, self._stop_idx, float("-inf"))
        return scores

    def finish(self, sequences_B_T: torch.Tensor) -> torch.Tensor:
        """[B, steps] float32 log-probabilities of the generated tokens."""
        if self.prev_B_V is not None:
            self.taken.append(self.prev_B_V.gather(1, sequences_B_T[:, -1:]).squeeze(1))
            self.prev_B_V = None
        if not self.taken:
            return torch.zeros((sequences_B_T.shape[0], 0))
        return torch.stack(self.taken, dim=1)


def _cut(
    tokens: list[int],
    logprobs: list[float],
    stops: tuple[int, ...],
    sampling: SamplingParams,
    tokenizer: Any,
) -> tuple[list[int], list[float], FinishReason]:
    """Keep tokens up to and including the first stop token, or the token that completes a stop
    string, whichever comes first; else everything (``length``)."""
    end = next((i + 1 for i, t in enumerate(tokens) if t in stops), None)
    if sampling.stop_strings:
        limit = end if end is not None else len(tokens)
        end_str = _stop_string_end(tokens[:limit], sampling.stop_strings, tokenizer)
        if end_str is not None:
            end = end_str
    if end is None:
        return tokens, logprobs, "length"
    return tokens[:end], logprobs[:end], "stop"


def _stop_string_end(tokens: list[int], stop_strings: Sequence[str], tokenizer: Any) -> int | None:
    """Smallest ``k`` such that ``decode(tokens[:k])`` contains a stop string, else None."""
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    if not any(s in text for s in stop_strings):
        return None
    lo, hi = 1, len(tokens)  # containment is monotone in k: binary search the first k
    while lo < hi:
        mid = (lo + hi) // 2
        if any(
            s in tokenizer.decode(tokens[:mid], skip_special_tokens=False) for s in stop_strings
        ):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _check_sampling(s: SamplingParams) -> None:
    if s.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {s.max_new_tokens}")
    if s.temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {s.temperature}")
    if not 0 < s.top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {s.top_p}")
    if s.top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0 = off), got {s.top_k}")
    if s.n < 1:
        raise ConfigError(f"n (samples per prompt) must be >= 1, got {s.n}")
    if not 0 <= s.min_new_tokens <= s.max_new_tokens:
        raise ConfigError(
            f"min_new_tokens must be in [0, max_new_tokens={s.max_new_tokens}], "
            f"got {s.min_new_tokens}"
        )

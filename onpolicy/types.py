"""What flows between the engine's parts: typed dataclasses, one IGNORE_INDEX.

Axis suffixes: ``_B`` sequences in a batch, ``_T`` token positions, ``_V`` vocabulary. Ragged
per-sequence data is a ``list`` with the ``_B`` suffix; padded data is a tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

IGNORE_INDEX = -100
"""Label value that marks a position that does not count (the Hugging Face convention)."""

FinishReason = Literal["stop", "length"]
"""Why a completion ended: ``stop`` (a stop token id or stop string was produced) or ``length``
(``max_new_tokens`` reached, truncated)."""


@dataclass(frozen=True)
class Prompt:
    """One prompt, as the user gave it: chat ``messages`` or plain ``text`` (exactly one is set).

    Each model renders it with its own chat template (the teacher never sees the student's).
    ``reference`` is an optional reference answer (task metric, supervised baselines).
    ``teacher`` names the teacher that scores it when a run has several (``teachers:``); None =
    all of them, mixed by weight.
    """

    messages: tuple[dict[str, str], ...] | None = None
    text: str | None = None
    reference: str | None = None
    teacher: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.text is None):
            raise ValueError("Prompt needs exactly one of `messages` or `text`; got both or none")


@dataclass(frozen=True)
class SamplingParams:
    """How a rollout backend samples. ``temperature == 0`` means greedy.

    ``stop_token_ids`` are in addition to the tokenizer's EOS (and, for chat models, the
    template's end-of-turn token), which backends always treat as stop tokens. A completion that
    ends with a stop token keeps it (the student learns to stop); one that ends with a stop string
    is cut after the token that completed the string. ``min_new_tokens`` suppresses every stop
    token before that many tokens (e.g. ``min_new_tokens == max_new_tokens``: equal lengths, as in
    throughput benchmarks); the engine's logprobs stay those of the unprocessed distribution.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    n: int = 1  # samples per prompt
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    min_new_tokens: int = 0


@dataclass
class Rollout:
    """A batch of sampled completions; ``B = len(prompts) * n``, grouped by prompt (prompt-major).

    Attributes:
        prompts: the prompts sampled from (length ``B / n``).
        prompt_index_B: index into ``prompts`` of each sequence.
        prompt_ids_B: the student's rendering of each sequence's prompt (token ids, no padding).
        completion_ids_B: the sampled token ids, up to and including the stop token actually used
            (absent if truncated at ``max_new_tokens``); nothing after it.
        sampling_logprobs_B: per completion token, the log-probability the rollout engine gave it
            under the policy's unprocessed distribution (temperature 1, no top-p/top-k), i.e. what
            the student's own forward pass computes; used for importance ratios.
        finish_reason_B: ``stop`` or ``length`` per sequence.
        texts_B: decoded completions (for metrics and display; never used for offsets).
        policy_version: optimizer step of the weights that produced the rollout.
    """

    prompts: list[Prompt]
    prompt_index_B: list[int]
    prompt_ids_B: list[list[int]]
    completion_ids_B: list[list[int]]
    sampling_logprobs_B: list[list[float]]
    finish_reason_B: list[FinishReason]
    texts_B: list[str]
    policy_version: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.prompt_index_B)
        for name in (
            "prompt_ids_B",
            "completion_ids_B",
            "sampling_logprobs_B",
            "finish_reason_B",
            "texts_B",
        ):
            if len(getattr(self, name)) != n:
                rows = len(getattr(self, name))
                raise ValueError(f"Rollout.{name} has {rows} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.prompt_index_B)

    def select(self, rows: Sequence[int]) -> Rollout:
        """The rollout restricted to ``rows`` (in that order); its ``prompts`` list is kept whole,
        so ``prompt_index_B`` stays valid; ``metrics`` are the whole rollout's and not kept."""
        return Rollout(
            prompts=self.prompts,
            prompt_index_B=[self.prompt_index_B[b] for b in rows],
            prompt_ids_B=[self.prompt_ids_B[b] for b in rows],
            completion_ids_B=[self.completion_ids_B[b] for b in rows],
            sampling_logprobs_B=[self.sampling_logprobs_B[b] for b in rows],
            finish_reason_B=[self.finish_reason_B[b] for b in rows],
            texts_B=[self.texts_B[b] for b in rows],
            policy_version=self.policy_version,
        )

    def to_padded(self, pad_token_id: int) -> PaddedBatch:
        """Prompt + completion per row, right-padded into tensors (see ``PaddedBatch``)."""
        return PaddedBatch.from_ragged(self.prompt_ids_B, self.completion_ids_B, pad_token_id)


@dataclass
class PaddedBatch:
    """Prompt + completion token ids, right-padded to a common length ``T``.

    Attributes:
        input_ids_B_T: int64 [B, T] token ids (``pad_token_id`` after each row's end).
        attention_mask_B_T: int64 [B, T] 1 on real tokens.
        completion_mask_B_T: bool [B, T] True on completion tokens (the positions whose tokens are
            learned: logits at ``t - 1`` predict token ``t``).
    """

    input_ids_B_T: torch.Tensor
    attention_mask_B_T: torch.Tensor
    completion_mask_B_T: torch.Tensor

    @classmethod
    def from_ragged(
        cls, prompt_ids_B: list[list[int]], completion_ids_B: list[list[int]], pad_token_id: int
    ) -> PaddedBatch:
        lengths = [len(p) + len(c) for p, c in zip(prompt_ids_B, completion_ids_B, strict=True)]
        B, T = len(lengths), max(lengths, default=0)
        input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
        attention = torch.zeros((B, T), dtype=torch.long)
        completion = torch.zeros((B, T), dtype=torch.bool)
        for b, (p, c) in enumerate(zip(prompt_ids_B, completion_ids_B, strict=True)):
            input_ids[b, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
            attention[b, : len(p) + len(c)] = 1
            completion[b, len(p) : len(p) + len(c)] = True
        return cls(input_ids, attention, completion)

    def labels(self) -> torch.Tensor:
        """[B, T] labels shifted for next-token loss: ``labels[:, t] = input_ids[:, t + 1]`` where
        that token is a completion token, ``IGNORE_INDEX`` elsewhere (the last column always).
        """
        labels = torch.full_like(self.input_ids_B_T, IGNORE_INDEX)
        target = self.input_ids_B_T[:, 1:]
        labels[:, :-1] = torch.where(self.completion_mask_B_T[:, 1:], target, IGNORE_INDEX)
        return labels


JSON = dict[str, Any]

ScoreFn = Callable[[str, Prompt], float]
"""``score(completion_text, prompt) -> float`` in [0, 1] (1 = correct), e.g. against
``prompt.reference``: a task metric."""

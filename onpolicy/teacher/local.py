"""``LocalTeacher``: a transformers teacher in this process (or the student's base, adapters off).

Same tokenizer: one no-grad forward on the student's rollout tokens; logits (or hidden states + LM
head for the chunked loss) at the completion positions. Different tokenizer: the conversation is
re-rendered with the teacher's own chat template and re-tokenized, and aligned to the student's
tokens (``onpolicy.teacher.cross``).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch

from alignment import same_tokenizer
from onpolicy.errors import ConfigError, TokenizerMismatchError
from onpolicy.forward import completion_positions, forward_completions
from onpolicy.hidden.layers import capture_hidden_states, pack_layers
from onpolicy.losses import token_logprobs
from onpolicy.models import adapters_disabled
from onpolicy.teacher.cross import matched_vocab_pairs, score_cross
from onpolicy.teacher.types import DenseScores, HiddenScores, TeacherScores, TopKScores
from onpolicy.types import PaddedBatch, Rollout

TeacherModeArg = Literal["same", "cross", "auto", "self"]
# same_tokenizer: tokenizer identity by content (alignment.tokens.vocab_map)
__all__ = ["LocalTeacher", "same_tokenizer"]


class LocalTeacher:
    """Scores rollouts with a local causal LM.

    Args:
        model: the teacher (frozen: eval mode, no grad). For ``mode="self"``, the (PEFT) student
            itself: it scores with its adapters disabled (self-distillation).
        tokenizer: the teacher's tokenizer.
        student_tokenizer: the student's tokenizer (compared by content to the teacher's).
        mode: ``same`` (shared tokenizer; a mismatch is a ``TokenizerMismatchError``), ``cross``
            (alignment layer), ``auto`` (``same`` if the tokenizers are identical, else ``cross``),
            ``self`` (the student's base; implies ``same``).
        hidden: return hidden states + LM head instead of logits (for the chunked loss).
        top_k: > 0 keeps only the teacher's top-k log-probabilities per position (+ the tail
            mass), the sparse form a vLLM teacher returns; 0 keeps the full logits.
        token_logprobs: compute ``TeacherScores.token_logprobs_N`` (the sampled-token signal:
            policy gradient, ``distillation_reward``, evaluation). With ``hidden=True`` it costs a
            full pass of the teacher's LM head over every position, which a chunked divergence
            does again: set False when the objective only needs the distribution (``reverse_kl``
            / ``gkd`` with ``chunked=True``); ``token_logprobs_N`` is then None.
        hidden_layers: indices of transformers' ``hidden_states`` (0 = embeddings) returned as
            ``TeacherScores.layer_hidden_L_N_D`` (same tokenizer), or at the teacher's own
            completion tokens as ``CrossTeacherScores.layer_hidden_L_Nt_D`` (cross tokenizer).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        student_tokenizer: Any,
        mode: TeacherModeArg = "auto",
        hidden: bool = False,
        top_k: int = 0,
        token_logprobs: bool = True,
        hidden_layers: tuple[int, ...] = (),
    ) -> None:
        if top_k < 0 or (top_k and hidden):
            raise ConfigError(f"teacher top_k={top_k}: use 0 (full logits) or > 0 without hidden")
        if mode not in ("same", "cross", "auto", "self"):
            raise ConfigError(f"teacher mode {mode!r} is unknown; use same, cross, auto or self")
        same = same_tokenizer(tokenizer, student_tokenizer)
        if mode in ("same", "self") and not same:
            raise TokenizerMismatchError(
                f"teacher tokenizer {_name(tokenizer)} differs from student tokenizer "
                f"{_name(student_tokenizer)} (vocabulary or merges); set teacher.mode=cross "
                "(or auto) to distill across tokenizers"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.student_tokenizer = student_tokenizer
        self.mode = "same" if mode in ("same", "self") or (mode == "auto" and same) else "cross"
        self.adapters_off = mode == "self"
        self.hidden = hidden
        self.top_k = top_k
        self.token_logprobs = token_logprobs
        self.hidden_layers = tuple(hidden_layers)
        self.vocab_size = len(tokenizer)
        if mode != "self":
            model.requires_grad_(False)
        self._matched: tuple[torch.Tensor, ...] | None = None

    def matched_vocab(self) -> tuple[torch.Tensor, ...]:
        """(student_ids_M, teacher_ids_M) spelling the same bytes; computed once (cross mode)."""
        if self._matched is None:
            self._matched = matched_vocab_pairs(self.student_tokenizer, self.tokenizer)
        return self._matched

    def score(self, rollout: Rollout) -> TeacherScores:
        """The teacher's ``TeacherScores`` for ``rollout`` (no gradients)."""
        start = time.perf_counter()
        scores = self._score_cross(rollout) if self.mode == "cross" else self._score_same(rollout)
        scores.metrics["teacher/seconds"] = time.perf_counter() - start
        return scores

    @torch.no_grad()
    def _score_same(self, rollout: Rollout) -> TeacherScores:
        batch = rollout.to_padded(self.tokenizer.pad_token_id)
        capture = capture_hidden_states(self.model) if self.hidden_layers else _null()
        adapters = adapters_disabled(self.model) if self.adapters_off else _null()
        with self._eval_mode(), adapters, capture as captured:
            fwd = forward_completions(self.model, batch, self.vocab_size, hidden=self.hidden)
        layers = None
        if self.hidden_layers:  # the same positions as the logits (the completion mask)
            mask_B_T, _ = completion_positions(batch)
            layers = pack_layers(captured.only(), self.hidden_layers, mask_B_T)
        common = {"vocab_size": self.vocab_size, "num_tokens_B": fwd.num_tokens_B,
                  "layer_hidden_L_N_D": layers}  # fmt: skip
        if fwd.logits_N_V is None:  # hidden states + head (the chunked divergence)
            scores = HiddenScores(hidden_N_D=fwd.hidden_N_D, lm_head=fwd.lm_head, **common)
            if self.token_logprobs:  # a slice of positions at a time: [N, V] never exists at once
                scores.token_logprobs_N = scores.token_logprobs(fwd.targets_N)
            return scores
        logprobs_N = token_logprobs(fwd.logits_N_V, fwd.targets_N)
        if self.top_k:
            top_lp, top_ids, tail = _sparse(fwd.logits_N_V, min(self.top_k, self.vocab_size))
            return TopKScores(
                topk_ids_N_K=top_ids, topk_logprobs_N_K=top_lp, tail_logprob_N=tail,
                token_logprobs_N=logprobs_N, **common,
            )  # fmt: skip
        return DenseScores(logits_N_V=fwd.logits_N_V, token_logprobs_N=logprobs_N, **common)

    def _score_cross(self, rollout: Rollout) -> TeacherScores:
        """``score_cross``; with ``hidden_layers``, the teacher's states at its completion tokens
        (``CrossTeacherScores.layer_hidden_L_Nt_D``) from the same forward."""
        if not self.hidden_layers:
            return score_cross(self, rollout)
        with capture_hidden_states(self.model) as captured:
            scores = score_cross(self, rollout)
        cross = scores.cross
        batch = PaddedBatch.from_ragged(
            cross.prompt_ids_B, cross.completion_ids_B, self.tokenizer.pad_token_id
        )  # the batch score_cross ran (the same rows, the same padding)
        cross.layer_hidden_L_Nt_D = pack_layers(
            captured.only(), self.hidden_layers, batch.completion_mask_B_T
        )
        return scores

    def _eval_mode(self):
        return _EvalMode(self.model)

    def forward_teacher_tokens(self, batch: Any) -> Any:
        """Teacher forward on a ``PaddedBatch`` of its own tokens (used by the cross path)."""
        with self._eval_mode(), torch.no_grad():
            return forward_completions(self.model, batch, self.vocab_size, hidden=False)


class _EvalMode:
    """Eval mode inside the block (no dropout), the previous mode restored after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _sparse(logits_N_V: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """(top-k log-probs [N, K] float32, their ids [N, K], log tail mass [N]) per position."""
    from onpolicy.losses import teacher_tail_logprob

    logprobs = torch.log_softmax(logits_N_V.float(), dim=-1)
    top_lp, top_ids = logprobs.topk(k, dim=-1)
    return top_lp, top_ids, teacher_tail_logprob(top_lp)


def _name(tokenizer: Any) -> str:
    return repr(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)

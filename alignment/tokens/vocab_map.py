"""Vocabulary map between two tokenizers, on normalized byte strings, and tokenizer identity.

Every non-special token is read as the bytes it stands for (``token_bytes_table``:
``Ġthe`` in byte-level BPE, ``▁the`` in SentencePiece and the byte-fallback ``<0x20>`` followed by
``the`` all give ``b" the"``). Tokens with the same bytes on both sides are matched. Special tokens
are kept apart: they have no bytes, and are matched by role (BOS to BOS, EOS to EOS, end-of-turn to
end-of-turn, ...) and by identical text (``<|im_end|>`` on both sides).

Projection of a teacher distribution onto the student vocabulary: student column ``s`` receives the
teacher probability of its matched teacher token ``t``; unmatched student columns get 0 and the
teacher mass on unmatched tokens is returned apart (``unmatched_N``), so a loss can treat it (GOLD:
by ULD).
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from typing import Any

import numpy as np
import torch

from alignment.errors import AlignmentError
from alignment.tokens.chat import special_roles
from alignment.tokens.offsets import TokenBytes, token_bytes_table
from alignment.types import VocabMap

_FINGERPRINTS: Any = weakref.WeakKeyDictionary()


def fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides how text becomes ids: the model (vocabulary, merges, type), the added
    tokens (content, id, special), the normalizer and the pre-tokenizer. Padding, truncation, the
    post-processor (BOS insertion) and the model's padded embedding size do not count."""
    with contextlib.suppress(KeyError, TypeError):
        return _FINGERPRINTS[tokenizer]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise AlignmentError(
            f"{type(tokenizer).__name__} has no fast backend; load a fast tokenizer"
        )
    digest = hashlib.sha256()
    for part in (backend.model, backend.normalizer, backend.pre_tokenizer):
        # the component's own JSON (the model's vocabulary is serialized in id order)
        digest.update(part.__getstate__() if part is not None else b"null")
    added = backend.get_added_tokens_decoder()
    digest.update(repr(sorted((i, t.content, t.special) for i, t in added.items())).encode())
    with contextlib.suppress(TypeError):
        _FINGERPRINTS[tokenizer] = digest.hexdigest()
    return digest.hexdigest()


def same_tokenizer(tok_a: Any, tok_b: Any) -> bool:
    """True if both tokenizers turn every text into the same ids (judged by content, never by
    vocabulary size: Qwen's 151,936 padded embeddings vs 152,064 are the same tokenizer)."""
    return tok_a is tok_b or fingerprint(tok_a) == fingerprint(tok_b)


def _bytes_index(table: TokenBytes) -> dict[bytes, int]:
    """bytes -> representative id over non-special tokens (non-fallback first, then lowest id)."""
    order = np.lexsort((np.arange(len(table.bytes_V)), table.byte_fallback_V))  # stable preference
    index: dict[bytes, int] = {}
    special = table.special_V
    for i in order.tolist():
        b = table.bytes_V[i]
        if b and not special[i] and b not in index:
            index[b] = i
    return index


def build_vocab_map(student_tokenizer: Any, teacher_tokenizer: Any) -> VocabMap:
    """Match the two vocabularies on token bytes; specials by role and by identical text."""
    s_table, t_table = token_bytes_table(student_tokenizer), token_bytes_table(teacher_tokenizer)
    s_index, t_index = _bytes_index(s_table), _bytes_index(t_table)
    pairs = sorted((s_id, t_index[b]) for b, s_id in s_index.items() if b in t_index)
    ids_M2 = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)

    s_roles, t_roles = special_roles(student_tokenizer), special_roles(teacher_tokenizer)
    specials = [(role, s_roles[role], t_roles[role]) for role in s_roles if role in t_roles]
    t_by_text = {t_table.bytes_V[i]: i for i in np.flatnonzero(t_table.special_V).tolist()}
    for i in np.flatnonzero(s_table.special_V).tolist():
        text = s_table.bytes_V[i]
        if text and text in t_by_text:
            specials.append(("content", i, t_by_text[text]))
    return VocabMap(
        student_ids_M=ids_M2[:, 0].contiguous(),
        teacher_ids_M=ids_M2[:, 1].contiguous(),
        special_roles=tuple(r for r, _, _ in specials),
        student_special_P=torch.tensor([s for _, s, _ in specials], dtype=torch.long),
        teacher_special_P=torch.tensor([t for _, _, t in specials], dtype=torch.long),
        student_vocab_size=len(s_table.bytes_V),
        teacher_vocab_size=len(t_table.bytes_V),
    )


def project_to_student(
    teacher_probs_N_Vt: torch.Tensor, vocab_map: VocabMap, student_vocab: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher probabilities moved onto the student vocabulary for matched tokens.

    Args:
        teacher_probs_N_Vt: [..., Vt] teacher probabilities (Vt may be the padded logit width).
        vocab_map: from ``build_vocab_map``.
        student_vocab: width ``Vs`` of the output (the student's logit width).

    Returns:
        (projected_N_Vs, unmatched_N): [..., Vs] with ``projected[..., s] = teacher[..., t]`` for
        every matched pair ``(s, t)`` and 0 elsewhere; [...] teacher mass on tokens without a match.
        Differentiable in ``teacher_probs`` (gather + scatter, no [Vt, Vs] matrix).
    """
    s_ids, t_ids = vocab_map.student_ids_M, vocab_map.teacher_ids_M
    if s_ids.numel() and (
        int(s_ids.max()) >= student_vocab or int(t_ids.max()) >= teacher_probs_N_Vt.shape[-1]
    ):
        raise AlignmentError(
            f"vocab map ids exceed the logit widths (student {student_vocab}, teacher "
            f"{teacher_probs_N_Vt.shape[-1]}); build the map from these models' tokenizers"
        )
    matched = teacher_probs_N_Vt.index_select(-1, t_ids.to(teacher_probs_N_Vt.device))
    out = teacher_probs_N_Vt.new_zeros((*teacher_probs_N_Vt.shape[:-1], student_vocab))
    out = out.index_copy(-1, s_ids.to(out.device), matched)
    return out, teacher_probs_N_Vt.sum(-1) - matched.sum(-1)


def projection_matrix(vocab_map: VocabMap, teacher_vocab: int, student_vocab: int) -> torch.Tensor:
    """The same projection as a sparse [Vt, Vs] 0/1 matrix: ``teacher_probs @ P`` (COO)."""
    idx = torch.stack([vocab_map.teacher_ids_M, vocab_map.student_ids_M])
    values = torch.ones(idx.shape[1])
    shape = (teacher_vocab, student_vocab)
    return torch.sparse_coo_tensor(idx, values, shape, check_invariants=True).coalesce()

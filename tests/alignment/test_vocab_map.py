"""Vocabulary map on token bytes, tokenizer identity by content, projection onto the student."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import AddedToken
from transformers import AutoTokenizer

from alignment.errors import AlignmentError
from alignment.tokens.offsets import token_bytes_table
from alignment.tokens.vocab_map import (
    build_vocab_map,
    project_to_student,
    projection_matrix,
    same_tokenizer,
)
from onpolicy import offline


def test_same_tokenizer_by_content(real_tokenizers):
    qwen = real_tokenizers["qwen"]
    again = AutoTokenizer.from_pretrained(offline.smollm2_dir())
    again.model_max_length = 7  # settings that do not change ids do not count
    assert same_tokenizer(real_tokenizers["smollm2"], again)
    assert not same_tokenizer(qwen, real_tokenizers["gpt2"])
    assert not same_tokenizer(real_tokenizers["smollm2"], real_tokenizers["gemma3"])
    changed = copy.deepcopy(real_tokenizers["gpt2"])
    changed.backend_tokenizer.add_special_tokens([AddedToken("<|new|>", special=True)])
    assert not same_tokenizer(real_tokenizers["gpt2"], changed)


@pytest.mark.parametrize(("student", "teacher"), [("smollm2", "gemma3"), ("gpt2", "qwen")])
def test_matched_tokens_have_identical_bytes(real_tokenizers, student, teacher):
    s_tok, t_tok = real_tokenizers[student], real_tokenizers[teacher]
    vmap = build_vocab_map(s_tok, t_tok)
    s_table, t_table = token_bytes_table(s_tok), token_bytes_table(t_tok)
    assert len(vmap.student_ids_M) > 10_000
    assert len(set(vmap.student_ids_M.tolist())) == len(vmap.student_ids_M)  # one-to-one
    assert len(set(vmap.teacher_ids_M.tolist())) == len(vmap.teacher_ids_M)
    for s, t in zip(
        vmap.student_ids_M.tolist()[::97], vmap.teacher_ids_M.tolist()[::97], strict=True
    ):
        assert s_table.bytes_V[s] == t_table.bytes_V[t] != b""
    # "Ġthe" (byte-level) and "▁the" (SentencePiece) are the same token
    s_the = s_tok.convert_tokens_to_ids("Ġthe")
    t_the = t_tok.convert_tokens_to_ids("▁the" if teacher == "gemma3" else "Ġthe")
    pos = (vmap.student_ids_M == s_the).nonzero()
    assert vmap.teacher_ids_M[pos].item() == t_the


def test_specials_matched_by_role(real_tokenizers):
    vmap = build_vocab_map(real_tokenizers["smollm2"], real_tokenizers["gemma3"])
    roles = dict(
        zip(
            vmap.special_roles,
            zip(vmap.student_special_P.tolist(), vmap.teacher_special_P.tolist(), strict=True),
            strict=True,
        )
    )
    assert roles["end_of_turn"] == (2, 106)  # <|im_end|> -> <end_of_turn>
    assert roles["bos"] == (1, 2)
    assert 2 not in vmap.student_ids_M.tolist()  # specials are never byte-matched


def test_projection_against_dense_reference(real_tokenizers):
    vmap = build_vocab_map(real_tokenizers["gpt2"], real_tokenizers["qwen"])
    Vs, Vt = 50304, 151936  # padded logit widths
    torch.manual_seed(0)
    teacher = torch.softmax(torch.randn(3, 5, Vt, dtype=torch.float64), -1).requires_grad_()
    projected, unmatched = project_to_student(teacher, vmap, Vs)
    P = projection_matrix(vmap, Vt, Vs).to(torch.float64)
    reference = torch.sparse.mm(P.t(), teacher.detach().reshape(-1, Vt).t()).t().reshape(3, 5, Vs)
    torch.testing.assert_close(projected.detach(), reference)
    torch.testing.assert_close(projected.sum(-1) + unmatched, torch.ones(3, 5, dtype=torch.float64))
    w = torch.randn(Vs, dtype=torch.float64)
    (projected * w).sum().backward()
    expected = torch.zeros(Vt, dtype=torch.float64)
    expected[vmap.teacher_ids_M] = w[vmap.student_ids_M]
    torch.testing.assert_close(teacher.grad, expected.expand(3, 5, Vt))


def test_projection_rejects_too_narrow_logits(real_tokenizers):
    vmap = build_vocab_map(real_tokenizers["gpt2"], real_tokenizers["qwen"])
    with pytest.raises(AlignmentError, match="exceed the logit widths"):
        project_to_student(torch.ones(1, 100), vmap, 50257)

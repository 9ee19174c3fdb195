"""Byte offsets on real tokenizers and random ids: a partition of the bytes, exact per token."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import SentencePieceBPETokenizer, normalizers, pre_tokenizers
from tokenizers.implementations import BertWordPieceTokenizer
from transformers import PreTrainedTokenizerFast

from alignment.errors import AlignmentError
from alignment.tokens.offsets import byte_offsets, token_bytes_table, token_offsets

REAL = ("gpt2", "qwen", "smollm2", "gemma3")

TEXTS = [
    "Hello world!",
    "Привет, как дела? Ёжик в тумане.",
    "你好，世界。日本語のテキストも。한국어",
    "family: 👨‍👩‍👧‍👦 flag: 🇫🇷 skin: 👍🏽 done",
    "def f(x):\n\treturn {'a': x ** 2}  # comment\n",
    "a    b\t\t\tc  \t  d     ",
    "line one\r\nline two\r\n\r\n",
    "   leading spaces and 1234567890 digits 3.14159",
    "",
    " ",
]


def check_partition(offsets: np.ndarray, n_bytes: int, text_mask: np.ndarray) -> None:
    """Text tokens tile [0, n_bytes) with end > start; the others are zero-width."""
    text = offsets[text_mask]
    assert (offsets[~text_mask, 0] == offsets[~text_mask, 1]).all()
    assert (text[:, 1] > text[:, 0]).all()
    if n_bytes == 0:
        assert len(text) == 0
        return
    assert text[0, 0] == 0 and text[-1, 1] == n_bytes
    assert (text[1:, 0] == text[:-1, 1]).all()


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("text", TEXTS)
def test_real_tokenizers_offsets_are_exact(real_tokenizers, name, text):
    tok = real_tokenizers[name]
    ids, off = byte_offsets(tok, text)
    assert ids.tolist() == tok(text)["input_ids"]
    off, data = off.numpy(), text.encode("utf-8")
    table = token_bytes_table(tok)
    check_partition(off, len(data), off[:, 1] > off[:, 0])
    for i, (s, e) in zip(ids.tolist(), off.tolist(), strict=True):
        if e > s:  # each token's slice is exactly that token's own bytes
            assert data[s:e] == table.bytes_V[i]
        else:
            assert table.special_V[i]


def test_split_character_is_cut_at_the_right_byte(real_tokenizers):
    tok = real_tokenizers["gpt2"]
    text = "Ж👨‍👩‍👧"
    ids, off = byte_offsets(tok, text)
    # GPT-2 splits these characters over several byte tokens; no byte is duplicated or lost
    assert len(ids) > len(text)
    data = text.encode("utf-8")
    assert b"".join(data[s:e] for s, e in off.tolist()) == data
    assert any(s > 0 and data[s] & 0xC0 == 0x80 for s, _ in off.tolist())  # a cut mid-character


def test_added_bos_is_zero_width_and_markers_in_text_cover_their_bytes(real_tokenizers):
    ids, off = byte_offsets(real_tokenizers["gemma3"], "hi")
    assert ids[0].item() == 2 and off[0].tolist() == [0, 0] and off[1:, 0].min() == 0
    text = "<|im_start|>user\nhi<|im_end|>"
    ids, off = byte_offsets(real_tokenizers["qwen"], text)
    assert ids[0].item() == 151644 and off[0].tolist() == [0, len("<|im_start|>")]
    check_partition(off.numpy(), len(text), np.ones(len(ids), dtype=bool))


def test_qwen_nfc_normalization_maps_back_to_original_bytes(real_tokenizers):
    text = "cafe\u0301 naïve e\u0301te\u0301"  # decomposed accents; Qwen sees NFC text
    ids, off = byte_offsets(real_tokenizers["qwen"], text)
    data = text.encode("utf-8")
    check_partition(off.numpy(), len(data), np.ones(len(ids), dtype=bool))
    table = token_bytes_table(real_tokenizers["qwen"])
    for i, (s, e) in zip(ids.tolist(), off.tolist(), strict=True):
        if table.bytes_V[i].isascii():  # tokens untouched by NFC keep their exact bytes
            assert data[s:e] == table.bytes_V[i]


@pytest.mark.parametrize("name", REAL)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=40))
def test_any_text_partitions(real_tokenizers, name, text):
    tok = real_tokenizers[name]
    ids, off = byte_offsets(tok, text)
    # SmolLM2's GGUF vocabulary has no token for some control bytes (e.g. 0x1d): a text made only
    # of them encodes to nothing, and no offsets can cover it. Inside other text such bytes are
    # given to a neighbouring token (checked by the partition below).
    assume(len(ids) > 0 or not text)
    table = token_bytes_table(tok)
    zero = table.special_V[ids.numpy()] & (off[:, 0] == off[:, 1]).numpy()
    check_partition(off.numpy(), len(text.encode("utf-8")), ~zero)


@pytest.mark.parametrize("name", REAL)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_ids_offsets_from_token_bytes(real_tokenizers, name, data):
    """Random ids (often invalid UTF-8 when concatenated): offsets are the bytes' cumulative
    lengths, the returned bytes are the tokens' bytes, never the decoded text's."""
    tok = real_tokenizers[name]
    table = token_bytes_table(tok)
    V = len(table.bytes_V)
    ids = data.draw(st.lists(st.integers(0, V - 1), max_size=30))
    base = data.draw(st.integers(0, 5))
    off, raw = token_offsets(tok, ids, base=base)
    expected = [b"" if table.special_V[i] else table.bytes_V[i] for i in ids]
    assert raw == b"".join(expected)
    assert [raw[s - base : e - base] for s, e in off.tolist()] == expected
    nonzero = off[:, 1] > off[:, 0]
    if nonzero.any():
        check_partition(off.numpy() - base, len(raw), nonzero.numpy())


def test_out_of_vocab_id_is_a_clear_error(real_tokenizers):
    with pytest.raises(AlignmentError, match="outside the tokenizer's vocabulary"):
        token_offsets(real_tokenizers["gpt2"], [1, 50257])


def _wrap(tok) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_sentencepiece_dummy_prefix_is_not_a_text_byte():
    sp = SentencePieceBPETokenizer(add_prefix_space=True)
    sp.train_from_iterator(["hello world"] * 20 + ["the cat sat"] * 20, vocab_size=80)
    tok = _wrap(sp._tokenizer)
    assert tok.convert_ids_to_tokens(tok("hello world")["input_ids"])[0].startswith("▁")
    for text in ["hello world", " hello", "cat  sat"]:
        _, off = byte_offsets(tok, text)
        data = text.encode("utf-8")
        text_mask = (off[:, 1] > off[:, 0]).numpy()
        check_partition(off.numpy(), len(data), text_mask)
        assert off[0, 0] == 0


def test_bytelevel_add_prefix_space(real_tokenizers):
    """Byte-level with add_prefix_space (RoBERTa-style): the added space is no text byte."""
    tok = copy.deepcopy(real_tokenizers["gpt2"])
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    for text in ["hello world", " hello"]:
        ids, off = byte_offsets(tok, text)
        assert tok.convert_ids_to_tokens(ids)[0] == "Ġhello"
        assert off.tolist()[0] == [0, len(text) - len(text.lstrip()) + 5]
        check_partition(off.numpy(), len(text), np.ones(len(ids), dtype=bool))


def test_llama2_legacy_prefix_with_unknown_tokens():
    """Prepend("▁") normalizer, no byte fallback: unknown characters map via character offsets
    and the dummy "▁" (alone in its token) is zero-width."""
    sp = SentencePieceBPETokenizer(add_prefix_space=True)
    sp.train_from_iterator(["hello world"] * 20 + ["the cat sat"] * 20, vocab_size=80)
    backend = sp._tokenizer
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    backend.pre_tokenizer = None
    tok = _wrap(backend)
    cases = {
        "zz hello": [[0, 0], [0, 1], [1, 2], [2, 8]],  # ▁ | <unk> | <unk> | ▁hello
        "é hello": [[0, 0], [0, 2], [2, 8]],
        " hello": [[0, 0], [0, 6]],
        "hello": [[0, 5]],
    }
    for text, expected in cases.items():
        assert byte_offsets(tok, text)[1].tolist() == expected


def test_wordpiece_lowercased_text_maps_via_characters():
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(["Hello world, the cat sat on the mat."] * 10, vocab_size=60)
    tok = _wrap(wp._tokenizer)
    text = "HELLO  wörld,\tcats"
    ids, off = byte_offsets(tok, text, add_special_tokens=False)
    data = text.encode("utf-8")
    check_partition(off.numpy(), len(data), np.ones(len(ids), dtype=bool))
    assert data[off[0, 0] : off[0, 1]].strip().lower().startswith(b"h")


def test_table_is_rebuilt_after_adding_tokens():
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(["hello world"] * 5, vocab_size=40)
    tok = _wrap(wp._tokenizer)
    before = len(token_bytes_table(tok).bytes_V)
    tok.add_tokens(["<new>"])
    ids, off = byte_offsets(tok, "hello <new>", add_special_tokens=False)
    table = token_bytes_table(tok)
    assert len(table.bytes_V) == before + 1 and table.bytes_V[-1] == b"<new>"
    assert ids[-1] == before and off[-1].tolist() == [6, 11]

"""Tiny real tokenizers and models: round trips, templates, cache, and a pretrained teacher that
answers from the corpus and ends its turn."""

from __future__ import annotations

import pytest
import torch

from onpolicy.chat import render_prompt, stop_token_ids
from onpolicy.models import load_model, load_tokenizer
from onpolicy.teacher.local import same_tokenizer
from onpolicy.tiny import SIZES, build_tokenizer, tiny_model_dir, tiny_tokenizer_dir
from onpolicy.types import Prompt

TEXTS = ["What is 3 plus 4?", "naïve façade 日本 🙂", "tab\tand\nnewline  two spaces", "ÿ€𝔘 xyzQ"]


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_tokenizer_round_trip_and_specials(kind):
    tok = build_tokenizer(kind)
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    eot = "<|im_end|>" if kind == "bpe" else "<end_of_turn>"
    assert len(tok(eot, add_special_tokens=False)["input_ids"]) == 1


def test_char_tokenizer_uses_byte_fallback_and_bos():
    tok = build_tokenizer("char")
    ids = tok("€", add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(ids[1:]) == ["<0xE2>", "<0x82>", "<0xAC>"]


def test_the_two_tokenizers_differ_by_content():
    bpe, char = build_tokenizer("bpe"), build_tokenizer("char")
    assert same_tokenizer(bpe, build_tokenizer("bpe"))
    assert not same_tokenizer(bpe, char)
    assert render_prompt(bpe, Prompt(text="hi")) != render_prompt(char, Prompt(text="hi"))


def test_model_dir_is_cached_and_configured():
    path = tiny_model_dir("tiny", "bpe", seed=0)
    assert tiny_model_dir("tiny", "bpe", seed=0) == path
    model, tok = load_model(path), load_tokenizer(path)
    cfg = model.config
    assert cfg.hidden_size // cfg.num_attention_heads == 32  # vLLM CPU attention needs 32/64/...
    assert cfg.num_hidden_layers == SIZES["tiny"]["num_hidden_layers"]
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    assert stop_token_ids(tok, model) == (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"))
    other = load_model(tiny_model_dir("tiny", "bpe", seed=1))
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)


def test_padded_vocab_and_tokenizer_dir():
    model = load_model(tiny_model_dir("tiny", "char", seed=0, pad_vocab_to=384))
    assert model.get_output_embeddings().weight.shape[0] == 384
    tok = load_tokenizer(tiny_tokenizer_dir("char"))
    assert len(tok) < 384
    with pytest.raises(ValueError, match="unknown tiny model size"):
        tiny_model_dir("huge")


def test_pretrained_teacher_answers_and_stops():
    path = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    model, tok = load_model(path), load_tokenizer(path)
    prompt = Prompt(messages=({"role": "user", "content": "What is 3 plus 4?"},))
    ids = torch.tensor([render_prompt(tok, prompt)])
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    completion = out[0, ids.shape[1] :].tolist()
    assert tok.decode(completion, skip_special_tokens=True) == "3 plus 4 is 7."
    assert completion[-1] == tok.convert_tokens_to_ids("<|im_end|>")

"""Prompt rendering with each model's own template, and the stop tokens each model uses."""

from __future__ import annotations

import pytest

from alignment.tokens.chat import end_of_turn_id
from onpolicy.chat import render_prompt, render_prompts, stop_token_ids
from onpolicy.errors import ConfigError
from onpolicy.tiny import build_tokenizer
from onpolicy.types import Prompt

MESSAGES = ({"role": "user", "content": "What is 1 plus 2?"},)


def test_messages_render_with_each_template():
    bpe, char = build_tokenizer("bpe"), build_tokenizer("char")
    p = Prompt(messages=MESSAGES)
    got = bpe.convert_ids_to_tokens(render_prompt(bpe, p))
    want = bpe.tokenize("<|im_start|>user\nWhat is 1 plus 2?<|im_end|>\n<|im_start|>assistant\n")
    assert got == want
    char_ids = render_prompt(char, p)
    assert char_ids[:2] == [char.bos_token_id, char.convert_tokens_to_ids("<start_of_turn>")]
    assert char.decode(char_ids).endswith("<start_of_turn>model\n")
    assert render_prompts(bpe, [p, p]) == [render_prompt(bpe, p)] * 2


def test_text_prompt_is_raw_and_missing_template_is_an_error():
    char = build_tokenizer("char")
    assert render_prompt(char, Prompt(text="ab")) == [char.bos_token_id, *char.encode("ab")[1:]]
    char.chat_template = None
    with pytest.raises(ConfigError, match=r"no chat template .* chat: false \(data.chat in"):
        render_prompt(char, Prompt(messages=MESSAGES))


def test_stop_tokens_include_eos_and_end_of_turn():
    bpe, char = build_tokenizer("bpe"), build_tokenizer("char")
    assert end_of_turn_id(bpe) == bpe.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(char) == (char.eos_token_id, char.convert_tokens_to_ids("<end_of_turn>"))
    assert stop_token_ids(bpe, extra=(7, bpe.eos_token_id))[-1] == 7
    bpe.chat_template = None
    assert stop_token_ids(bpe) == (bpe.eos_token_id,)

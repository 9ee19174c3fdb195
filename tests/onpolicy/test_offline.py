"""The offline real tokenizers/models load, round-trip text and (SmolLM2) generate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from onpolicy import offline

TEXT = "Hello world! Привет, мир. 你好世界 👨‍👩‍👧 \t\t  x = 12345\r\n"

# name -> (vocabulary size with added tokens, BOS, EOS, "Hello world" ids)
EXPECTED = {
    "gpt2": (50257, "<|endoftext|>", "<|endoftext|>", [15496, 995]),
    "qwen": (151665, None, "<|im_end|>", [9707, 1879]),
    "smollm2": (49152, "<|im_start|>", "<|im_end|>", None),
    "gemma3": (262144, "<bos>", "<eos>", None),
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def named_tokenizer(request):
    return request.param, AutoTokenizer.from_pretrained(offline.ALL[request.param]())


def test_tokenizer_loads_and_round_trips(named_tokenizer):
    name, tok = named_tokenizer
    size, bos, eos, hello = EXPECTED[name]
    assert len(tok) == size
    assert (tok.bos_token, tok.eos_token) == (bos, eos)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == TEXT
    if hello is not None:
        assert tok("Hello world", add_special_tokens=False)["input_ids"] == hello


def test_gemma_adds_bos_and_others_do_not(named_tokenizer):
    name, tok = named_tokenizer
    ids = tok("hi")["input_ids"]
    assert (ids[0] == tok.convert_tokens_to_ids("<bos>")) == (name == "gemma3")


@pytest.mark.parametrize("name", ["qwen", "smollm2", "gemma3"])
def test_chat_templates_render(name):
    tok = AutoTokenizer.from_pretrained(offline.ALL[name]())
    text = tok.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert "2+2?" in text
    marker = {"gemma3": "<start_of_turn>model\n"}.get(name, "<|im_start|>assistant\n")
    assert text.endswith(marker)


def test_smollm2_greedy_generates():
    path = offline.smollm2_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    completion = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in completion


def test_gemma3_model_scores_text():
    path = offline.gemma3_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok("The capital of France is Paris.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    # a real model predicts "Paris" far better than uniform (log 262144 ~ 12.5 nats)
    logp = torch.log_softmax(logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None])
    assert -logp[-2].item() < 6.0


def test_cache_dir_env_and_concurrent_materialize(tmp_path: Path):
    """Two processes building the same folder at once: one builds, both get a complete folder."""
    script = (
        "import sys, time; from onpolicy import offline\n"
        "def build(out):\n"
        "    time.sleep(0.5); (out / 'data.txt').write_text('x')\n"
        "print(offline._materialize('demo', build))\n"
    )
    env = {**os.environ, "ONPOLICY_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs == [str(tmp_path / "demo")] * 2
    assert (tmp_path / "demo" / "data.txt").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]

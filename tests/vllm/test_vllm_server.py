"""The ``vllm-server`` backend and the vLLM teacher against a real ``vllm serve`` on 127.0.0.1
(a tiny model with the char/byte-fallback tokenizer): rollouts by token ids equal the ``hf``
backend, raw logprobs, adapter sync and full-weight sync."""

from __future__ import annotations

import copy

import pytest
import torch

vllm = pytest.importorskip("vllm")

from onpolicy.chat import render_prompts  # noqa: E402
from onpolicy.models import LoraSpec, apply_lora, load_model, load_tokenizer  # noqa: E402
from onpolicy.rollout.base import make_backend  # noqa: E402
from onpolicy.types import Prompt, SamplingParams  # noqa: E402

pytestmark = pytest.mark.vllm

QUESTIONS = ["What is 3 plus 4?", "Spell façade.", "What color is the snow?"]
GREEDY = SamplingParams(max_new_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def served(vllm_server):
    url, path = vllm_server
    return url, path, load_model(path, trainable=False), load_tokenizer(path)


def _backend(url, model, tok, tmp_path, sync="adapter"):
    return make_backend(
        "vllm-server",
        model=model,
        tokenizer=tok,
        server_url=url,
        sync=sync,
        sync_dir=str(tmp_path / sync),
        timeout_s=60,
        max_retries=1,
    )


def _ids(tok):
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS]
    return prompts, render_prompts(tok, prompts)


def _hf(model, tok, ids, sampling=GREEDY):
    return make_backend("hf", model=model, tokenizer=tok).generate(ids, sampling)


def _forward_logprobs(model, prompt_ids_B, completion_ids_B):
    out = []
    with torch.no_grad():
        for p, c in zip(prompt_ids_B, completion_ids_B, strict=True):
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
            out.append(logp[len(p) - 1 : len(p) + len(c) - 1])  # (len(c), V)
    return out


def test_server_rollouts_by_token_ids_equal_the_hf_backend(served, tmp_path):
    url, _, model, tok = served
    prompts, ids = _ids(tok)
    backend = _backend(url, model, tok, tmp_path)
    ro = backend.generate(ids, GREEDY, prompts)
    assert ro.completion_ids_B == _hf(model, tok, ids).completion_ids_B
    assert ro.prompts == prompts and ro.prompt_ids_B == ids
    sampled = backend.generate(ids, SamplingParams(max_new_tokens=8, temperature=1.5, n=2, seed=1))
    assert len(sampled) == 6 and sampled.prompt_index_B == [0, 0, 1, 1, 2, 2]
    logp = _forward_logprobs(model, sampled.prompt_ids_B, sampled.completion_ids_B)
    want = torch.cat(
        [
            lp[torch.arange(len(c)), c]
            for lp, c in zip(logp, map(torch.tensor, sampled.completion_ids_B), strict=True)
        ]
    )
    got = torch.tensor([x for r in sampled.sampling_logprobs_B for x in r])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # raw, not temperature-scaled


def test_adapter_sync_then_weight_sync_to_the_server(served, tmp_path):
    url, _, model, tok = served
    _, ids = _ids(tok)
    student = apply_lora(
        copy.deepcopy(model), LoraSpec(rank=8, alpha=16, target_modules="all-linear")
    )
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    adapter = _backend(url, model, tok, tmp_path, "adapter")
    metrics = adapter.sync_weights(student, step=2)
    assert adapter.model.endswith("step2") and metrics["sync/policy_version"] == 2
    assert adapter.generate(ids, GREEDY).completion_ids_B == _hf(student, tok, ids).completion_ids_B

    full = _backend(url, model, tok, tmp_path, "weights")
    updated = copy.deepcopy(model)
    with torch.no_grad():
        for p in updated.parameters():
            p.add_(torch.randn_like(p) * 0.3 * p.std().clamp(min=1e-3))
    try:
        full.sync_weights(updated, step=4)
        got = full.generate(ids, GREEDY).completion_ids_B
        assert got == _hf(updated, tok, ids).completion_ids_B
        assert got != _hf(model, tok, ids).completion_ids_B
    finally:
        full.sync_weights(model, step=5)  # the session's server goes back to the original

"""The ``vllm`` backend and the vLLM teacher on a real pretrained model, SmolLM2-135M-Instruct
(float32): greedy rollouts equal the ``hf`` backend's, sampling logprobs and top-k prompt logprobs
agree with the model's own forward pass."""

from __future__ import annotations

import pytest
import torch

vllm = pytest.importorskip("vllm")

from onpolicy.chat import render_prompts  # noqa: E402
from onpolicy.models import load_model, load_tokenizer  # noqa: E402
from onpolicy.offline import smollm2_dir  # noqa: E402
from onpolicy.rollout.base import make_backend  # noqa: E402
from onpolicy.teacher.vllm_teacher import VLLMTeacher  # noqa: E402
from onpolicy.types import Prompt, SamplingParams  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUESTIONS = ["What is the capital of France?", "Name three colors.", "What is 12 plus 30?"]


@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_dir()
    backend = make_backend("vllm", model_path=path, dtype="float32", max_model_len=512)
    yield path, backend, load_model(path, trainable=False), load_tokenizer(path)
    backend.close()


def _ids(tok):
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS]
    return prompts, render_prompts(tok, prompts)


def _forward_logprobs_N_V(model, prompt_ids_B, completion_ids_B):
    rows = []
    with torch.no_grad():
        for p, c in zip(prompt_ids_B, completion_ids_B, strict=True):
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
            rows.append(logp[len(p) - 1 : len(p) + len(c) - 1])
    return torch.cat(rows)  # (N, V) packed row-major


def test_smollm2_greedy_equals_hf_and_logprobs_match_the_forward(smollm2):
    _, backend, model, tok = smollm2
    prompts, ids = _ids(tok)
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    ro = backend.generate(ids, greedy, prompts)
    ref = make_backend("hf", model=model, tokenizer=tok).generate(ids, greedy, prompts)
    assert ro.completion_ids_B == ref.completion_ids_B
    assert ro.texts_B == ref.texts_B
    sampled = backend.generate(ids, SamplingParams(max_new_tokens=12, temperature=0.8, seed=0))
    lp_N_V = _forward_logprobs_N_V(model, sampled.prompt_ids_B, sampled.completion_ids_B)
    targets = torch.tensor([t for c in sampled.completion_ids_B for t in c])
    got = torch.tensor([x for r in sampled.sampling_logprobs_B for x in r])
    torch.testing.assert_close(got, lp_N_V[torch.arange(len(targets)), targets], atol=2e-3, rtol=0)


def test_smollm2_engine_teacher_top_k(smollm2):
    _, backend, model, tok = smollm2
    _, ids = _ids(tok)
    ro = backend.generate(ids, SamplingParams(max_new_tokens=10, temperature=1.0, seed=1))
    scores = VLLMTeacher(backend.llm, top_k=8, tokenizer=tok).score(ro)
    lp_N_V = _forward_logprobs_N_V(model, ro.prompt_ids_B, ro.completion_ids_B)
    top_lp, _ = lp_N_V.topk(8, dim=-1)
    torch.testing.assert_close(scores.topk_logprobs_N_K, top_lp, atol=2e-3, rtol=0)
    picked = lp_N_V.gather(1, scores.topk_ids_N_K)
    torch.testing.assert_close(picked, scores.topk_logprobs_N_K, atol=2e-3, rtol=0)
    targets = torch.tensor([t for c in ro.completion_ids_B for t in c])
    torch.testing.assert_close(
        scores.token_logprobs_N, lp_N_V[torch.arange(len(targets)), targets], atol=2e-3, rtol=0
    )
    assert bool((scores.tail_logprob_N <= 0).all())

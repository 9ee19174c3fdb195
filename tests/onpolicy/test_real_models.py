"""The engine on real pretrained models from the package index (SmolLM2-135M-Instruct student,
Gemma-3-270M teacher, Qwen's real tokenizer with padded embeddings)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from onpolicy.api import make_objective
from onpolicy.chat import render_prompts, stop_token_ids
from onpolicy.models import load_model, load_tokenizer
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.types import Prompt, SamplingParams

offline = pytest.importorskip("onpolicy.offline")
PROMPTS = [
    Prompt(messages=({"role": "user", "content": "What is the capital of France?"},)),
    Prompt(messages=({"role": "user", "content": "Say hello in Japanese."},)),
]


def _seq_logprob(model, prompt_ids, completion_ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + completion_ids])).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], -1)
    return lp.gather(1, torch.tensor(completion_ids)[:, None]).sum()


@pytest.mark.slow
def test_smollm2_rollout_stops_at_its_end_of_turn_and_gemma_scores_it_across_tokenizers():
    spath, tpath = offline.smollm2_dir(), offline.gemma3_dir()
    student, stok = load_model(spath), load_tokenizer(spath)
    im_end = stok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in stop_token_ids(stok, student)
    ro = HFRolloutBackend(student, stok).generate(
        render_prompts(stok, PROMPTS[:1]),
        SamplingParams(max_new_tokens=16, temperature=0),
        PROMPTS[:1],
    )
    assert "Paris" in ro.texts_B[0]
    for b, c in enumerate(ro.completion_ids_B):
        if ro.finish_reason_B[b] == "stop":
            assert c[-1] == im_end and im_end not in c[:-1]
        lp = _seq_logprob(student, ro.prompt_ids_B[b], c)
        assert float(lp) == pytest.approx(sum(ro.sampling_logprobs_B[b]), abs=1e-2)

    teacher, ttok = load_model(tpath, trainable=False), load_tokenizer(tpath)
    scores = LocalTeacher(teacher, ttok, stok, mode="auto").score(ro)
    cross = scores.cross
    assert scores.mode == "cross" and scores.metrics["teacher/coverage"] > 0.95
    from onpolicy.objectives.cross import span_advantages_and_logprobs

    _, adv_N, _ = span_advantages_and_logprobs(student, ro, scores)
    rows = torch.split(adv_N, [len(c) for c in ro.completion_ids_B])
    for b in range(len(ro)):  # chain rule across two real tokenizers, stop span included
        t_seq = _seq_logprob(teacher, cross.prompt_ids_B[b], cross.completion_ids_B[b])
        s_seq = _seq_logprob(student, ro.prompt_ids_B[b], ro.completion_ids_B[b])
        torch.testing.assert_close(rows[b].sum(), t_seq - s_seq, atol=2e-2, rtol=1e-3)
    out = make_objective("gold").loss(student, ro, scores)
    out.loss_sum.backward()
    assert torch.isfinite(out.loss_sum) and out.num_tokens == sum(cross.num_spans_B)


def test_qwen_tokenizer_with_differently_padded_embeddings_is_the_same_tokenizer():
    path = offline.qwen_tokenizer_dir()
    stok, ttok = load_tokenizer(path), load_tokenizer(path)
    assert len(stok) < 151_936

    def tiny(vocab: int, seed: int) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_key_value_heads=1,
        )
        return LlamaForCausalLM(cfg)

    student, teacher = tiny(151_936, 0), tiny(152_064, 1)
    teacher.requires_grad_(False)
    ro = HFRolloutBackend(student, stok).generate(
        render_prompts(stok, PROMPTS), SamplingParams(max_new_tokens=4, seed=0), PROMPTS
    )
    scores = LocalTeacher(teacher, ttok, stok, mode="same").score(ro)
    assert scores.logits_N_V.shape[1] == len(stok)
    out = make_objective("reverse_kl").loss(student, ro, scores)
    assert torch.isfinite(out.loss_sum) and out.num_tokens == 8

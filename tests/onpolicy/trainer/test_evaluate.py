"""Held-out evaluation with a teacher that returns hidden states + head (``hidden=True``, the
chunked objectives' teacher): its metrics equal those of the same teacher returning dense logits,
for a Gemma-style teacher whose head soft-caps its logits and adds no bias (the head rebuild must
apply the softcap, or the KL is wrong)."""

from __future__ import annotations

import pytest
import torch

from onpolicy.models import load_model, load_tokenizer
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.tiny import tiny_model_dir
from onpolicy.trainer.evaluate import evaluate
from onpolicy.types import Prompt, SamplingParams


def _softcap_teacher(vocab: int, pad_id: int):
    """A tiny random Gemma-2 (final-logit softcap 2.0: most logits saturate) on ``vocab``."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(3)
    config = Gemma2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        final_logit_softcapping=2.0,
        pad_token_id=pad_id,
    )
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():  # scale the head so the uncapped logits would differ from the capped
        model.get_output_embeddings().weight.mul_(20.0)
    return model.requires_grad_(False)


@pytest.mark.parametrize("greedy", [True, False])
def test_softcap_teacher_eval_kl_equals_the_dense_reference(greedy):
    path = tiny_model_dir("tiny", "bpe", seed=0)
    student, tok = load_model(path), load_tokenizer(path)
    teacher = _softcap_teacher(len(tok), tok.pad_token_id)
    prompts = [
        Prompt(messages=({"role": "user", "content": q},)) for q in ("Hi", "Count to 3.", "sky?")
    ]
    sampling = SamplingParams(max_new_tokens=8, temperature=1.0, seed=0)
    backend = HFRolloutBackend(student, tok)

    def run(hidden: bool) -> dict[str, float]:
        local = LocalTeacher(teacher, tok, tok, mode="same", hidden=hidden, token_logprobs=False)
        torch.manual_seed(0)
        return evaluate(student, tok, local, backend, prompts, sampling, greedy=greedy)

    dense, chunked = run(hidden=False), run(hidden=True)
    assert dense["eval/kl_per_token"] > 0.0
    assert dense.keys() == chunked.keys()
    for key, value in dense.items():
        assert chunked[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    # the capped head is what the model computes: uncapped, the KL would be far off
    uncapped = _uncapped_kl(student, tok, teacher, backend, prompts, sampling, greedy)
    assert abs(uncapped - dense["eval/kl_per_token"]) > 0.1


def _uncapped_kl(student, tok, teacher, backend, prompts, sampling, greedy) -> float:
    """``eval/kl_per_token`` with a teacher whose logits skip the softcap (the old bug's value)."""
    cap = teacher.config.final_logit_softcapping
    teacher.config.final_logit_softcapping = None
    try:
        local = LocalTeacher(teacher, tok, tok, mode="same", token_logprobs=False)
        torch.manual_seed(0)
        return evaluate(student, tok, local, backend, prompts, sampling, greedy=greedy)[
            "eval/kl_per_token"
        ]
    finally:
        teacher.config.final_logit_softcapping = cap


def test_kl_is_reported_per_token_and_per_byte_from_the_same_sums():
    """Hand-derived: 6.0 nats of KL over 4 completion positions holding 12 UTF-8 bytes."""
    from onpolicy.trainer.evaluate import _means

    sums = {
        "n_rows": 2.0,
        "bytes": 12.0,
        "completion_tokens": 4.0,
        "truncated": 0.0,
        "repetition": 0.0,
        "kl": 6.0,
        "n_positions": 4.0,
    }
    out = _means(sums)
    assert out["eval/kl_per_token"] == pytest.approx(1.5)
    assert out["eval/kl_per_byte"] == pytest.approx(0.5)

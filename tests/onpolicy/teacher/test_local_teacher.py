"""LocalTeacher on tiny real models: logits at the completion positions equal an independent
per-row forward; hidden-state form; tokenizer identity by content; padded vocab; self-distill."""

from __future__ import annotations

import pytest
import torch

from onpolicy.chat import render_prompts
from onpolicy.errors import TokenizerMismatchError
from onpolicy.forward import head_logits
from onpolicy.models import LoraSpec, apply_lora, load_model, load_tokenizer
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.teacher.local import LocalTeacher, same_tokenizer
from onpolicy.teacher.types import DenseScores, HiddenScores
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt, SamplingParams


@pytest.fixture(scope="module")
def student():
    path = tiny_model_dir("tiny", "bpe", seed=0)
    return load_model(path), load_tokenizer(path)


@pytest.fixture(scope="module")
def rollout(student):
    model, tok = student
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in ("Hi", "Count to 3.")]
    backend = HFRolloutBackend(model, tok)
    return backend.generate(render_prompts(tok, prompts), SamplingParams(8, n=2, seed=0), prompts)


def _reference(model, ro, vocab):
    """Per row, unpadded: logits at positions P-1 .. P+C-2 (they predict the completion)."""
    rows = []
    with torch.no_grad():
        for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
            logits = model(input_ids=torch.tensor([p + c])).logits[0, :, :vocab]
            rows.append(logits[len(p) - 1 : len(p) + len(c) - 1])
    return torch.cat(rows)


def test_same_tokenizer_logits_and_token_logprobs(student, rollout):
    _, tok = student
    path = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    model = load_model(path, trainable=False)
    scores = LocalTeacher(model, load_tokenizer(path), tok, mode="same").score(rollout)
    want = _reference(model, rollout, len(tok))
    assert scores.mode == "same" and scores.num_tokens_B == [
        len(c) for c in rollout.completion_ids_B
    ]
    torch.testing.assert_close(scores.logits_N_V, want, atol=1e-4, rtol=1e-4)
    targets = torch.tensor([t for c in rollout.completion_ids_B for t in c])
    lp = torch.log_softmax(want.double(), -1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(scores.token_logprobs_N.double(), lp, atol=1e-4, rtol=1e-4)
    hidden = LocalTeacher(model, tok, tok, mode="same", hidden=True).score(rollout)
    assert isinstance(scores, DenseScores) and isinstance(hidden, HiddenScores)
    assert hidden.hidden_N_D.shape[0] == want.shape[0]
    torch.testing.assert_close(
        head_logits(hidden.hidden_N_D, hidden.lm_head), want, atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        hidden.token_logprobs_N, scores.token_logprobs_N, atol=1e-5, rtol=1e-5
    )
    lean = LocalTeacher(model, tok, tok, mode="same", hidden=True, token_logprobs=False)
    lean_scores = lean.score(rollout)  # the same hidden states, no token log-probs pass
    assert lean_scores.token_logprobs_N is None
    assert torch.equal(lean_scores.hidden_N_D, hidden.hidden_N_D)
    torch.testing.assert_close(  # on demand: the same values, a block of positions at a time
        lean_scores.token_logprobs(targets), hidden.token_logprobs_N, atol=1e-6, rtol=1e-6
    )


def test_tokenizer_mismatch_is_a_one_line_error_naming_cross(student):
    model, tok = student
    char = load_tokenizer(tiny_model_dir("tiny", "char", seed=0))
    with pytest.raises(TokenizerMismatchError, match=r"teacher\.mode=cross") as err:
        LocalTeacher(load_model(tiny_model_dir("tiny", "char", seed=0)), char, tok, mode="same")
    assert "\n" not in str(err.value)
    assert LocalTeacher(model, char, tok, mode="auto").mode == "cross"


def test_same_tokenizer_with_padded_embeddings_ignores_the_padding(student, rollout):
    _, tok = student
    path = tiny_model_dir("tiny", "bpe", seed=3, pad_vocab_to=448)
    model = load_model(path, trainable=False)
    teacher = LocalTeacher(model, load_tokenizer(path), tok, mode="auto")
    assert teacher.mode == "same" and same_tokenizer(load_tokenizer(path), tok)
    scores = teacher.score(rollout)
    assert scores.logits_N_V.shape[1] == len(tok) < 448
    torch.testing.assert_close(
        scores.logits_N_V, _reference(model, rollout, len(tok)), atol=1e-4, rtol=1e-4
    )


def test_self_distillation_scores_with_adapters_off(student, rollout):
    _, tok = student
    path = tiny_model_dir("tiny", "bpe", seed=0)
    base = load_model(path, trainable=False)
    peft = apply_lora(load_model(path), LoraSpec(rank=4))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    scores = LocalTeacher(peft, tok, tok, mode="self").score(rollout)
    torch.testing.assert_close(
        scores.logits_N_V, _reference(base, rollout, len(tok)), atol=1e-4, rtol=1e-4
    )
    assert not torch.allclose(_reference(peft, rollout, len(tok)), scores.logits_N_V)
    assert any(p.requires_grad for p in peft.parameters())  # the student still trains

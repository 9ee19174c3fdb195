"""The ``hf`` rollout backend on tiny real models: greedy = argmax, stop handling, engine logprobs
equal a separate forward pass, KV cache in use, n samples, seeds, left padding."""

from __future__ import annotations

import copy

import pytest
import torch

from onpolicy.chat import render_prompts
from onpolicy.errors import ConfigError
from onpolicy.models import LoraSpec, apply_lora, load_model, load_tokenizer
from onpolicy.rollout.base import make_backend
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt, SamplingParams

QUESTIONS = ["What is 3 plus 4?", "Count to 9.", "What color is the sky?"]


@pytest.fixture(scope="module")
def teacher():
    path = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    return load_model(path, trainable=False), load_tokenizer(path)


@pytest.fixture(scope="module")
def student():
    path = tiny_model_dir("tiny", "bpe", seed=0)
    return load_model(path), load_tokenizer(path)


def _prompts(questions=QUESTIONS):
    return [Prompt(messages=({"role": "user", "content": q},)) for q in questions]


def _generate(model, tok, sampling, questions=QUESTIONS, **kwargs):
    backend = make_backend("hf", model=model, tokenizer=tok, **kwargs)
    prompts = _prompts(questions)
    return backend.generate(render_prompts(tok, prompts), sampling, prompts)


def _argmax_continuation(model, prompt_ids, steps, stops):
    ids = list(prompt_ids)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(nxt)
            out.append(nxt)
            if nxt in stops:
                break
    return out


def test_greedy_is_the_argmax_continuation_and_keeps_the_stop_token(teacher):
    model, tok = teacher
    ro = _generate(model, tok, SamplingParams(max_new_tokens=16, temperature=0))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for b in range(len(ro)):  # rows of different prompt lengths: left padding must not matter
        want = _argmax_continuation(model, ro.prompt_ids_B[b], 16, {im_end, tok.eos_token_id})
        assert ro.completion_ids_B[b] == want
    assert ro.texts_B[0] == "3 plus 4 is 7."
    assert ro.finish_reason_B == ["stop"] * 3
    assert all(c[-1] == im_end and im_end not in c[:-1] for c in ro.completion_ids_B)
    batch = ro.to_padded(tok.pad_token_id)
    assert batch.completion_mask_B_T.sum(1).tolist() == [len(c) for c in ro.completion_ids_B]
    labels = batch.labels()
    for b, c in enumerate(ro.completion_ids_B):  # the stop token is a learned target
        assert labels[b][labels[b] != -100].tolist() == c


def test_checkpoint_generation_defaults_do_not_leak_into_sampling(teacher):
    model, tok = teacher
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    shipped = copy.deepcopy(model.generation_config)
    model.generation_config.repetition_penalty = 5.0
    model.generation_config.suppress_tokens = [im_end]
    model.generation_config.min_new_tokens = 12
    model.generation_config.top_k = 1
    try:
        ro = _generate(model, tok, SamplingParams(max_new_tokens=16, temperature=0))
        assert ro.texts_B[0] == "3 plus 4 is 7." and ro.completion_ids_B[0][-1] == im_end
        assert model.generation_config.repetition_penalty == 5.0  # restored afterwards
    finally:
        model.generation_config = shipped


def test_sampling_logprobs_are_the_unprocessed_policy(student):
    model, tok = student
    sampling = SamplingParams(max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.9, seed=1)
    ro = _generate(model, tok, sampling)
    for b in range(len(ro)):
        ids = torch.tensor([ro.prompt_ids_B[b] + ro.completion_ids_B[b]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        P = len(ro.prompt_ids_B[b])
        want = logp[P - 1 : -1].gather(1, ids[0, P:, None]).squeeze(1)
        torch.testing.assert_close(
            torch.tensor(ro.sampling_logprobs_B[b]), want, atol=1e-4, rtol=1e-4
        )


def test_kv_cache_is_used(student):
    model, tok = student
    lengths = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        _generate(
            model, tok, SamplingParams(max_new_tokens=6, temperature=1.0, seed=0), stop_ids=()
        )
    finally:
        hook.remove()
    assert len(lengths) == 6 and lengths[0] > 1 and lengths[1:] == [1] * 5


def test_n_samples_seed_and_length(student):
    model, tok = student
    s = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=5)
    a, b = _generate(model, tok, s, stop_ids=()), _generate(model, tok, s, stop_ids=())
    assert a.completion_ids_B == b.completion_ids_B
    assert a.prompt_index_B == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len({tuple(c) for c in a.completion_ids_B[:3]}) > 1  # independent samples
    assert a.finish_reason_B == ["length"] * 9 and {len(c) for c in a.completion_ids_B} == {8}
    c = _generate(model, tok, SamplingParams(max_new_tokens=8, n=3, seed=6), stop_ids=())
    assert c.completion_ids_B != a.completion_ids_B
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    _generate(model, tok, s, stop_ids=())
    assert torch.equal(torch.rand(3), want)  # a seeded rollout leaves the caller's RNG alone


def test_unseeded_rollouts_draw_fresh_randomness(student):
    model, tok = student
    s = SamplingParams(max_new_tokens=8, temperature=1.0, n=3)
    torch.manual_seed(0)
    a, b = _generate(model, tok, s, stop_ids=()), _generate(model, tok, s, stop_ids=())
    assert a.completion_ids_B != b.completion_ids_B  # not the same noise every call
    torch.manual_seed(0)
    assert _generate(model, tok, s, stop_ids=()).completion_ids_B == a.completion_ids_B


def test_stop_strings_and_extra_stop_ids(teacher):
    model, tok = teacher
    ro = _generate(
        model,
        tok,
        SamplingParams(max_new_tokens=16, temperature=0, stop_strings=("plus 4",)),
        QUESTIONS[:1],
    )
    ids = ro.completion_ids_B[0]
    assert "plus 4" in tok.decode(ids) and "plus 4" not in tok.decode(ids[:-1])
    assert ro.finish_reason_B == ["stop"] and len(ro.sampling_logprobs_B[0]) == len(ids)
    four = tok.encode(" 4")[-1]
    ro = _generate(
        model,
        tok,
        SamplingParams(max_new_tokens=16, temperature=0, stop_token_ids=(four,)),
        QUESTIONS[:1],
    )
    assert ro.completion_ids_B[0][-1] == four and ro.finish_reason_B == ["stop"]


def test_min_new_tokens_suppresses_stops_and_keeps_raw_logprobs(teacher):
    model, tok = teacher
    free = _generate(model, tok, SamplingParams(max_new_tokens=16, temperature=0))
    assert all(len(c) < 16 for c in free.completion_ids_B)  # it would stop early on its own
    ro = _generate(model, tok, SamplingParams(max_new_tokens=16, min_new_tokens=16, temperature=0))
    stops = {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}
    assert ro.finish_reason_B == ["length"] * 3
    for b, (c, c_free) in enumerate(zip(ro.completion_ids_B, free.completion_ids_B, strict=True)):
        assert len(c) == 16 and not stops & set(c)
        assert c[: len(c_free) - 1] == c_free[:-1]  # the same text up to where it stopped
        ids = torch.tensor([ro.prompt_ids_B[b] + c])
        with torch.no_grad():  # logprobs of the unmasked policy: stop tokens keep their mass
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        P = len(ro.prompt_ids_B[b])
        want = logp[P - 1 : -1].gather(1, ids[0, P:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(ro.sampling_logprobs_B[b]), want, atol=1e-4, rtol=0)
    short = _generate(
        model, tok, SamplingParams(max_new_tokens=16, min_new_tokens=3, temperature=0)
    )
    assert short.completion_ids_B == free.completion_ids_B  # a minimum below the length: no effect


def test_lora_student_samples_in_eval_mode_and_keeps_train_mode():
    path = tiny_model_dir("tiny", "bpe", seed=0)
    model = apply_lora(load_model(path), LoraSpec(rank=4, dropout=0.5))
    model.train()
    tok = load_tokenizer(path)
    s = SamplingParams(max_new_tokens=5, temperature=0)
    a, b = _generate(model, tok, s), _generate(model, tok, s)
    assert a.completion_ids_B == b.completion_ids_B  # no dropout while sampling
    assert model.training


def test_bad_sampling_params(student):
    model, tok = student
    for bad in (
        {"temperature": -1},
        {"top_p": 0},
        {"n": 0},
        {"max_new_tokens": 0},
        {"top_k": -2},
        {"min_new_tokens": -1},
        {"max_new_tokens": 4, "min_new_tokens": 5},
    ):
        with pytest.raises(ConfigError):
            _generate(model, tok, SamplingParams(**bad))

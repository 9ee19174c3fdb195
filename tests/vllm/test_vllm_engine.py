"""The colocated ``vllm`` backend on a real in-process engine (tiny pretrained model, float32):
greedy = the ``hf`` backend, raw sampling logprobs = the student's forward, weight sync (full,
LoRA merged in float32, LoRA adapter) makes the engine generate what the updated student would."""

from __future__ import annotations

import pytest
import torch

vllm = pytest.importorskip("vllm")

from onpolicy.chat import render_prompts  # noqa: E402
from onpolicy.models import LoraSpec, apply_lora, load_model, load_tokenizer  # noqa: E402
from onpolicy.rollout.base import make_backend  # noqa: E402
from onpolicy.rollout.vllm_engine import VLLMEngineBackend, VLLMEngineOptions  # noqa: E402
from onpolicy.rollout.weights import full_weights  # noqa: E402
from onpolicy.types import Prompt, SamplingParams  # noqa: E402

pytestmark = pytest.mark.vllm

QUESTIONS = [
    "What is 3 plus 4?",
    "Count to 9.",
    "What color is the sky?",
    "Spell naïve.",
    "Repeat: über",
    "What is 7 plus 8?",
]
GREEDY = SamplingParams(max_new_tokens=20, temperature=0)


@pytest.fixture(scope="module")
def model_and_tok(tiny_teacher_path):
    path = tiny_teacher_path
    return load_model(path, trainable=False), load_tokenizer(path)


@pytest.fixture(scope="module")
def shared_engine(tiny_teacher_path):
    """One engine for the module, LoRA enabled (adapter sync); other backends share its LLM."""
    backend = make_backend(
        "vllm",
        model_path=tiny_teacher_path,
        dtype="float32",
        max_model_len=256,
        sync="adapter",
        max_lora_rank=8,
    )
    yield backend
    backend.close()


@pytest.fixture
def engine(shared_engine, model_and_tok):
    """The shared engine, with the original weights pushed back after the test."""
    yield shared_engine
    shared_engine._lora_request = None
    shared_engine.push_weights(full_weights(model_and_tok[0]))
    shared_engine.policy_version = 0


def _prompts(tok):
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS]
    return prompts, render_prompts(tok, prompts)


def _hf(model, tok, prompt_ids, sampling=GREEDY, prompts=None):
    return make_backend("hf", model=model, tokenizer=tok).generate(prompt_ids, sampling, prompts)


def _forward_logprobs(model, rollout) -> list[list[float]]:
    """The student's own temperature-1 log-probabilities of each completion token."""
    out = []
    with torch.no_grad():
        for p, c in zip(rollout.prompt_ids_B, rollout.completion_ids_B, strict=True):
            ids = torch.tensor([p + c])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
            out.append(logp[pos, torch.tensor(c)].tolist())
    return out


def test_greedy_equals_the_hf_backend_and_keeps_the_stop_token(engine, model_and_tok):
    model, tok = model_and_tok
    prompts, ids = _prompts(tok)
    ro = engine.generate(ids, GREEDY, prompts)
    ref = _hf(model, tok, ids, GREEDY, prompts)
    assert ro.completion_ids_B == ref.completion_ids_B
    assert ro.finish_reason_B == ref.finish_reason_B
    assert ro.prompt_ids_B == ids and ro.prompt_index_B == list(range(len(ids)))
    stops = set(engine.stop_token_ids)
    stopped = [
        c for c, r in zip(ro.completion_ids_B, ro.finish_reason_B, strict=True) if r == "stop"
    ]
    assert stopped, "the pretrained model should end some answers with its end-of-turn token"
    assert all(c[-1] in stops and not stops & set(c[:-1]) for c in stopped)
    torch.testing.assert_close(
        torch.tensor([x for r in ro.sampling_logprobs_B for x in r]),
        torch.tensor([x for r in ref.sampling_logprobs_B for x in r]),
        atol=1e-4,
        rtol=0,
    )


def test_sampled_logprobs_are_the_raw_temperature_1_logprobs(engine, model_and_tok):
    model, tok = model_and_tok
    _, ids = _prompts(tok)
    # temperature and top-k change what is sampled, not the logprobs reported (raw_logprobs)
    sampling = SamplingParams(max_new_tokens=12, temperature=1.7, top_k=20, n=3, seed=5)
    ro = engine.generate(ids, sampling)
    assert len(ro) == 3 * len(ids) and ro.prompt_index_B[:4] == [0, 0, 0, 1]
    assert len({tuple(c) for c in ro.completion_ids_B}) > len(ids)  # n samples differ
    want = _forward_logprobs(model, ro)
    got = torch.tensor([x for r in ro.sampling_logprobs_B for x in r])
    torch.testing.assert_close(got, torch.tensor([x for r in want for x in r]), atol=1e-4, rtol=0)
    # a temperature-scaled (processed) logprob would be far off for these samples
    assert (got / 1.7 - got).abs().max() > 0.1


def test_seeded_sampling_is_reproducible(engine, model_and_tok):
    _, ids = _prompts(model_and_tok[1])
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0, n=2, seed=11)
    assert engine.generate(ids, sampling).completion_ids_B == (
        engine.generate(ids, sampling).completion_ids_B
    )


def _perturbed(model, scale=0.2, seed=0):
    import copy

    new = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std().clamp(min=1e-3))
    return new


def test_full_weight_sync_generates_what_the_updated_student_would(engine, model_and_tok):
    model, tok = model_and_tok
    prompts, ids = _prompts(tok)
    before = engine.generate(ids, GREEDY).completion_ids_B
    updated = _perturbed(model)
    metrics = engine.sync_weights(updated, step=3)
    assert metrics["sync/seconds"] > 0 and engine.policy_version == 3
    ro = engine.generate(ids, GREEDY, prompts)
    assert ro.policy_version == 3
    assert ro.completion_ids_B == _hf(updated, tok, ids).completion_ids_B
    assert ro.completion_ids_B != before  # the sync changed the policy


def test_sync_every_skips_steps_between_syncs(shared_engine, engine, model_and_tok):
    model, tok = model_and_tok
    _, ids = _prompts(tok)
    every2 = VLLMEngineBackend(
        shared_engine.model_path,
        options=VLLMEngineOptions(sync_every=2),
        llm=shared_engine.llm,
        stop_token_ids=shared_engine.stop_token_ids,
    )
    before = every2.generate(ids, GREEDY).completion_ids_B
    assert every2.sync_weights(_perturbed(model), step=1) == {}
    assert every2.generate(ids, GREEDY).completion_ids_B == before


def _lora_student(model, seed):
    import copy

    student = apply_lora(
        copy.deepcopy(model), LoraSpec(rank=8, alpha=16, target_modules="all-linear")
    )
    _train_lora(student, seed)
    return student


def _train_lora(student, seed, scale=0.3):
    """Stand-in for an optimizer step: new random LoRA B and A values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def test_lora_merged_sync_holds_base_plus_current_delta(shared_engine, engine, model_and_tok):
    model, tok = model_and_tok
    _, ids = _prompts(tok)
    merged = VLLMEngineBackend(
        shared_engine.model_path,
        options=VLLMEngineOptions(lora_sync="merged"),
        llm=shared_engine.llm,
        stop_token_ids=shared_engine.stop_token_ids,
    )
    student = _lora_student(model, seed=1)
    base_q = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    for step in range(1, 4):  # several syncs: the engine must not accumulate deltas
        _train_lora(student, seed=step)
        merged.sync_weights(student, step)
    layer = student.get_base_model().model.layers[0].self_attn.q_proj
    torch.testing.assert_close(layer.base_layer.weight, base_q, atol=0, rtol=0)  # base untouched
    # The engine's weights, seen through its logits (CPU vLLM repacks its weights): the raw
    # logprobs of sampled tokens equal the student's (base + the *current* delta) forward; a sum
    # of the deltas of earlier syncs would be far off.
    ro = merged.generate(ids, SamplingParams(max_new_tokens=8, temperature=1.0, seed=3))
    got = torch.tensor([x for r in ro.sampling_logprobs_B for x in r])
    want = torch.tensor([x for r in _forward_logprobs(student, ro) for x in r])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert merged.generate(ids, GREEDY).completion_ids_B == _hf(student, tok, ids).completion_ids_B


def test_lora_adapter_sync_generates_what_the_lora_student_would(engine, model_and_tok):
    model, tok = model_and_tok
    _, ids = _prompts(tok)
    student = _lora_student(model, seed=7)
    engine.sync_weights(student, step=1)
    first = engine._lora_request
    assert engine.generate(ids, GREEDY).completion_ids_B == _hf(student, tok, ids).completion_ids_B
    _train_lora(student, seed=8)
    engine.sync_weights(student, step=2)
    assert engine._lora_request.lora_int_id == first.lora_int_id + 1  # a new adapter id per sync
    assert engine.generate(ids, GREEDY).completion_ids_B == _hf(student, tok, ids).completion_ids_B

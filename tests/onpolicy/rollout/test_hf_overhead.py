"""The ``hf`` rollout against plain ``model.generate`` (TRL's call, ``benchmarks/rollout_overhead``)
on a tiny real model: the same tokens for a seed, logprobs equal to a float64 forward pass, and no
more device->host syncs or launched ops per decode step than plain ``generate`` (+ the two ops that
record the logprobs). Op and sync counts are deterministic (a dispatch mode counts them), not
timings; on a GPU each launched op is a kernel launch and each sync stalls the host."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmarks.rollout_overhead import OpCounter, inverse_cdf, per_step, run_engine, run_plain
from onpolicy.chat import render_prompts, stop_token_ids
from onpolicy.models import load_model, load_tokenizer
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt, SamplingParams

QUESTIONS = ["What is 3 plus 4?", "Count to 9.", "What color is the sky?", "Name a fruit."]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread is fastest (and spins on no shared core); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup(path):
    """(model, tokenizer, stop ids, 4 left-padded prompt rows of different lengths)."""
    model, tok = load_model(path), load_tokenizer(path)
    model.eval()
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS]
    rows = render_prompts(tok, prompts)
    assert len({len(r) for r in rows}) > 1  # left padding is exercised
    return model, tok, stop_token_ids(tok, model), rows


@pytest.fixture(scope="module")
def setup():
    """A random tiny model (op counts do not depend on the weights)."""
    return _setup(tiny_model_dir("tiny", "bpe", seed=0))


@pytest.fixture(scope="module")
def chat():
    """A tiny model pretrained to answer and end its turn: its samples stop, so stop handling
    and the ``min_new_tokens`` masking are exercised."""
    return _setup(tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300))


@pytest.mark.parametrize("forced", [True, False], ids=["equal-lengths", "free-lengths"])
def test_same_tokens_as_plain_generate_for_a_seed(chat, forced):
    """The recorder and the engine's own stop masking leave sampling untouched: the draws equal
    plain ``generate``'s (its ``min_new_tokens`` processors when lengths are forced), cut after
    the first stop token the same way."""
    stops = set(chat[2])
    engine = run_engine(*chat, 16, 0, forced)
    assert engine == run_plain(*chat, 16, 0, forced)
    if forced:
        assert {len(c) for c in engine} == {16} and not stops & {t for c in engine for t in c}
    else:  # samples that stop early: the stop cut is compared too
        assert any(c[-1] in stops and len(c) < 16 for c in engine)
    other = run_engine(*chat, 16, 8, forced)
    assert other != engine  # the seed matters: equality above is not a constant output


def test_min_new_tokens_boundary(chat):
    """``min_new_tokens = m`` masks the stops of the first ``m`` steps only (transformers'
    meaning): a greedy completion that stops at step ``L`` is unchanged by ``m = L - 1`` and
    loses its stop with ``m = L``."""
    model, tok, stops, rows = chat
    backend = HFRolloutBackend(model, tok, stop_ids=stops)
    free = backend.generate(rows[:1], SamplingParams(max_new_tokens=16, temperature=0))
    ids, L = free.completion_ids_B[0], len(free.completion_ids_B[0])
    assert free.finish_reason_B == ["stop"] and L > 1
    at = SamplingParams(max_new_tokens=16, min_new_tokens=L - 1, temperature=0)
    assert backend.generate(rows[:1], at).completion_ids_B[0] == ids
    past = SamplingParams(max_new_tokens=16, min_new_tokens=L, temperature=0)
    longer = backend.generate(rows[:1], past).completion_ids_B[0]
    assert longer[: L - 1] == ids[: L - 1] and longer[L - 1] not in stops


def test_logprobs_equal_a_float64_forward_pass(chat):
    """Raw temperature-1 logprobs, read before the stop masking of ``min_new_tokens``, also under
    temperature/top-k/top-p sampling."""
    model, tok, stops, rows = chat
    sampling = SamplingParams(
        max_new_tokens=12, min_new_tokens=4, temperature=0.8, top_k=30, top_p=0.95, seed=3
    )
    ro = HFRolloutBackend(model, tok, stop_ids=stops).generate(rows, sampling)
    ref = copy.deepcopy(model).double()
    for b in range(len(ro)):
        ids = torch.tensor([ro.prompt_ids_B[b] + ro.completion_ids_B[b]])
        with torch.no_grad():
            logp = torch.log_softmax(ref(input_ids=ids).logits[0], -1)  # float64
        P = len(ro.prompt_ids_B[b])
        want = logp[P - 1 : -1].gather(1, ids[0, P:, None]).squeeze(1)
        got = torch.tensor(ro.sampling_logprobs_B[b], dtype=torch.float64)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_counter_sees_syncs_and_host_reads():
    x = torch.arange(6.0)
    with OpCounter(torch.nn.Identity()) as c:
        float(x.sum())
        x.tolist()
        _ = x[x > 2]  # boolean indexing: the output size is data-dependent
    assert c.syncs["aten::_local_scalar_dense"] == 1 and c.syncs["Tensor.tolist"] == 1
    assert c.syncs["aten::index.Tensor"] == 1 and c.totals()["syncs"] == 3


@pytest.mark.parametrize("forced", [True, False], ids=["equal-lengths", "free-lengths"])
def test_per_step_syncs_and_ops_not_above_plain_generate(setup, forced):
    engine = per_step("engine", setup, 4, 12, forced)["totals"]
    plain = per_step("plain", setup, 4, 12, forced)["totals"]
    assert engine["syncs"] <= plain["syncs"]
    assert engine["in_forward"] == plain["in_forward"] > 0  # the same model work per step
    # recording the logprobs: a log_softmax and a gather per step; the engine's min_new_tokens
    # masking (one index_fill) is cheaper than transformers' processors (clone/arange/isin/where)
    allowance = 0 if forced else 2
    assert engine["launches"] <= plain["launches"] + allowance


def test_inverse_cdf_draws_the_distribution():
    """The benchmark's what-if sampler: frequencies match the probabilities (a hand-set row and
    a peaked one), zero-probability entries are never drawn, shape ``[B, 1]`` like multinomial."""
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    torch.manual_seed(0)
    assert inverse_cdf(probs, 1).shape == (2, 1)
    draws = inverse_cdf(probs.repeat_interleave(20_000, dim=0), 1).view(2, 20_000)
    freq = torch.stack([torch.bincount(d, minlength=5) for d in draws]).double() / 20_000
    torch.testing.assert_close(freq[0], probs[0].double(), atol=0.015, rtol=0)  # ~4.5 sigma
    assert freq[0, 1] == 0 and freq[0, 4] == 0 and freq[1, 4] == 1

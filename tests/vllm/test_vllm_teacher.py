"""The vLLM teacher on a real ``vllm serve`` (tiny char-tokenizer model, LoRA off): top-k prompt
logprobs equal the teacher's own forward pass, same tokenizer and across tokenizers (the teacher
scores its own rendering and tokenization; the alignment layer maps them)."""

from __future__ import annotations

import pytest
import torch

vllm = pytest.importorskip("vllm")

from onpolicy.chat import render_prompts  # noqa: E402
from onpolicy.errors import ConfigError  # noqa: E402
from onpolicy.losses.sparse import sparse_divergence  # noqa: E402
from onpolicy.models import load_model, load_tokenizer  # noqa: E402
from onpolicy.rollout.base import make_backend  # noqa: E402
from onpolicy.teacher.vllm_teacher import VLLMTeacher, sparse_rows  # noqa: E402
from onpolicy.types import Prompt, SamplingParams  # noqa: E402

pytestmark = pytest.mark.vllm

QUESTIONS = ["What is 3 plus 4?", "Spell façade.", "What color is the snow?"]


@pytest.fixture(scope="module")
def served(vllm_teacher_server):
    url, path = vllm_teacher_server
    return url, path, load_model(path, trainable=False), load_tokenizer(path)


def _ids(tok):
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS]
    return prompts, render_prompts(tok, prompts)


def _forward_logprobs(model, prompt_ids_B, completion_ids_B):
    out = []
    with torch.no_grad():
        for p, c in zip(prompt_ids_B, completion_ids_B, strict=True):
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
            out.append(logp[len(p) - 1 : len(p) + len(c) - 1])  # (len(c), V)
    return out


def _check_scores(scores, model, prompt_ids_B, completion_ids_B, k):
    logp = _forward_logprobs(model, prompt_ids_B, completion_ids_B)
    lp_N_V = torch.cat(logp)  # (N, V) packed row-major
    targets = torch.tensor([t for c in completion_ids_B for t in c])
    torch.testing.assert_close(
        scores.token_logprobs_N, lp_N_V[torch.arange(len(targets)), targets], atol=1e-4, rtol=0
    )
    top_lp, _ = lp_N_V.topk(k, dim=-1)
    torch.testing.assert_close(scores.topk_logprobs_N_K, top_lp, atol=1e-4, rtol=0)
    picked = lp_N_V.gather(1, scores.topk_ids_N_K)  # the ids are the ones with those logprobs
    torch.testing.assert_close(picked, scores.topk_logprobs_N_K, atol=1e-4, rtol=0)
    tail = torch.log1p(-top_lp.double().exp().sum(-1)).float()
    torch.testing.assert_close(scores.tail_logprob_N, tail, atol=1e-4, rtol=1e-4)
    assert scores.num_tokens_B == [len(c) for c in completion_ids_B]


def test_server_teacher_same_tokenizer_top_k(served):
    url, _, model, tok = served
    _, ids = _ids(tok)
    ro = make_backend("vllm-server", server_url=url, sync="none").generate(
        ids, SamplingParams(max_new_tokens=6, seed=2)
    )
    scores = VLLMTeacher(url, top_k=8, tokenizer=tok).score(ro)
    assert scores.mode == "same" and scores.vocab_size == len(tok)
    _check_scores(scores, model, ro.prompt_ids_B, ro.completion_ids_B, 8)
    # the sparse losses consume it as is: same loss as from the teacher's own top-k
    student_N_V = torch.randn(len(scores.token_logprobs_N), len(tok), generator=torch.Generator())
    teacher_lp = torch.cat(_forward_logprobs(model, ro.prompt_ids_B, ro.completion_ids_B))
    ref_lp, ref_ids = teacher_lp.topk(8, dim=-1)
    for name in ("reverse_kl", "forward_kl"):
        got = sparse_divergence(
            student_N_V,
            scores.topk_ids_N_K,
            scores.topk_logprobs_N_K,
            name,
            teacher_tail=scores.tail_logprob_N,
        )
        want = sparse_divergence(student_N_V, ref_ids, ref_lp, name)
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)


def test_server_teacher_cross_tokenizer_scores_its_own_tokens(served, tiny_teacher_path):
    """Cross mode is the local teacher's path (same teacher tokens and spans) with dense
    log-probs rebuilt from the served top-k: equal to the rebuild of the local teacher's top-k,
    and every cross objective takes them."""
    from onpolicy.objectives.base import make_objective
    from onpolicy.teacher.local import LocalTeacher
    from onpolicy.teacher.topk_dense import dense_from_topk

    url, _, teacher_model, teacher_tok = served
    student, student_tok = load_model(tiny_teacher_path), load_tokenizer(tiny_teacher_path)
    prompts, ids = _ids(student_tok)
    ro = make_backend("hf", model=student, tokenizer=student_tok).generate(
        ids, SamplingParams(max_new_tokens=16, temperature=0), prompts
    )
    teacher = VLLMTeacher(
        url, top_k=5, mode="cross", tokenizer=teacher_tok, student_tokenizer=student_tok
    )
    scores = teacher.score(ro)
    local = LocalTeacher(teacher_model, teacher_tok, student_tok, mode="cross").score(ro)
    got, want = scores.cross, local.cross
    assert scores.mode == "cross" and got.prompt_ids_B == want.prompt_ids_B
    assert got.completion_ids_B == want.completion_ids_B
    for a, b in zip(got.student_span_B + got.teacher_span_B,
                    want.student_span_B + want.teacher_span_B, strict=True):  # fmt: skip
        assert torch.equal(a, b)
    torch.testing.assert_close(got.token_logprobs_Nt, want.token_logprobs_Nt, atol=1e-4, rtol=0)
    logp = torch.log_softmax(want.logits_Nt_V.float(), dim=-1)
    top_lp, top_ids = logp.topk(5, dim=-1)
    targets = torch.tensor([t for c in want.completion_ids_B for t in c])
    rebuilt = dense_from_topk(top_ids, top_lp, len(teacher_tok), targets,
                              logp.gather(1, targets[:, None])[:, 0])  # fmt: skip
    torch.testing.assert_close(got.logits_Nt_V, rebuilt, atol=1e-4, rtol=0)
    for name in ("next_byte", "gold", "uld", "policy_gradient"):
        out = make_objective(name, {}).loss(student, ro, scores)
        assert torch.isfinite(out.loss_sum), name


def test_sparse_rows_by_hand():
    """Rank decides the top-k (the actual token may be outside it); tail = log(1 - sum p)."""
    import math

    positions = [
        None,
        {5: (-0.1, 1)},
        {7: (math.log(0.5), 1), 3: (math.log(0.2), 2), 9: (math.log(0.1), 3)},
    ]
    ids, lps, tok, tail = sparse_rows([positions], [2], [[9]], k=2)
    assert ids.tolist() == [[7, 3]] and tok.tolist() == pytest.approx([math.log(0.1)])
    assert lps[0].tolist() == pytest.approx([math.log(0.5), math.log(0.2)])
    assert tail.tolist() == pytest.approx([math.log(0.3)], abs=1e-6)


def test_a_lora_enabled_engine_is_refused_as_teacher():
    class FakeConfig:  # only the attribute the guard reads
        lora_config = object()

    class FakeEngine:
        vllm_config = FakeConfig()

    class FakeLLM:
        llm_engine = FakeEngine()

    with pytest.raises(ConfigError, match="enable_lora"):
        VLLMTeacher(FakeLLM())

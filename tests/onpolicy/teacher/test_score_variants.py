"""``TeacherScores`` variants: one ``dense_logits`` / ``token_logprobs`` path each, checked
against the dense teacher on a tiny real model (a softcap head included), and the variants that
hold no full distribution say so."""

from __future__ import annotations

import pytest
import torch
from tiny_same_pair import same_tokenizer_pair

from onpolicy.chat import render_prompts
from onpolicy.losses import LMHead
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.teacher.types import (
    CrossScores,
    DenseScores,
    HiddenScores,
    TeacherScores,
    TokenScores,
    TopKScores,
)
from onpolicy.types import Prompt, SamplingParams


@pytest.fixture(scope="module")
def scored():
    p = same_tokenizer_pair()
    prompts = [Prompt(messages=({"role": "user", "content": "What is 2 plus 2?"},))]
    ro = HFRolloutBackend(p.student, p.tokenizer).generate(
        render_prompts(p.tokenizer, prompts), SamplingParams(8, n=2, seed=1), prompts
    )
    targets = torch.tensor([t for c in ro.completion_ids_B for t in c])
    kinds = {"dense": {}, "hidden": {"hidden": True}, "lean": {"hidden": True,
             "token_logprobs": False}, "topk": {"top_k": 8}}  # fmt: skip
    tok = p.tokenizer
    out = {
        k: LocalTeacher(p.teacher, tok, tok, mode="same", **kw).score(ro) for k, kw in kinds.items()
    }
    return out, targets


def test_each_variant_from_the_local_teacher(scored):
    out, _ = scored
    assert [type(out[k]) for k in ("dense", "hidden", "lean", "topk")] == [
        DenseScores,
        HiddenScores,
        HiddenScores,
        TopKScores,
    ]
    assert all(s.mode == "same" for s in out.values()) and CrossScores.mode == "cross"


def test_dense_logits_and_token_logprobs_agree_across_variants(scored):
    out, targets = scored
    dense = out["dense"]
    want_lp = torch.log_softmax(dense.logits_N_V.double(), -1).gather(1, targets[:, None])[:, 0]
    for k in ("dense", "hidden", "lean", "topk"):
        got = out[k].token_logprobs(targets).double()
        torch.testing.assert_close(got, want_lp, atol=1e-4, rtol=1e-4)
    for k in ("hidden", "lean"):
        torch.testing.assert_close(out[k].dense_logits(), dense.dense_logits(), atol=1e-4, rtol=0)


def test_hidden_scores_apply_the_heads_softcap():
    """The evaluation bug of issue 15: logits rebuilt from hidden states must go through the
    head's softcap and scale (``head_logits``), as the float64 formula says."""
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(5, 4, generator=g), torch.randn(7, 4, generator=g)
    head = LMHead(weight, None, logit_scale=0.5, softcap=2.0)
    scores = HiddenScores(vocab_size=7, num_tokens_B=[5], hidden_N_D=hidden, lm_head=head)
    want = 2.0 * torch.tanh((hidden.double() @ weight.double().T) * 0.5 / 2.0)
    torch.testing.assert_close(scores.dense_logits().double(), want, atol=1e-5, rtol=1e-5)


def test_variants_without_a_distribution_refuse_clearly(scored):
    out, _ = scored
    token = TokenScores(vocab_size=3, num_tokens_B=[2], token_logprobs_N=torch.zeros(2))
    for s in (out["topk"], token):
        with pytest.raises(ValueError, match="no full teacher distribution"):
            s.dense_logits()
    with pytest.raises(TypeError, match="common base"):
        TeacherScores(vocab_size=3, num_tokens_B=[2])
    with pytest.raises(ValueError, match="TokenScores needs token_logprobs_N"):
        TokenScores(vocab_size=3, num_tokens_B=[2])

"""One home for per-token math: the reverse KL per position (training diagnostics, evaluation,
the evidence diagnostics) is ``onpolicy.losses.reverse_kl`` unreduced, and the sampled-token
log-probs of evaluation are ``onpolicy.losses.token_logprobs``; each caller is checked against a
float64 reference from the definitions, masked tokens included."""

from __future__ import annotations

import math

import pytest
import torch

from onpolicy.evidence.diagnostics import reverse_kl_by_position
from onpolicy.losses import reverse_kl
from onpolicy.trainer.diagnostics import reverse_kl_per_token


def _reference_reverse_kl(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """float64 ``KL(p_s || p_t)`` per row, on the teacher's support (the student renormalized over
    the tokens the teacher allows), ``0 log 0 = 0``."""
    s, t = s_logits.double(), t_logits.double()
    s = s.masked_fill(t.isneginf(), -math.inf)
    ps, log_ps, log_pt = s.softmax(-1), s.log_softmax(-1), t.log_softmax(-1)
    terms = torch.where(ps > 0, ps * (log_ps - log_pt), torch.zeros((), dtype=torch.float64))
    return terms.sum(-1)


def _logits() -> tuple[torch.Tensor, torch.Tensor]:
    """[2, 3, 7] student and teacher logits; the teacher masks a token in one row and the student
    another in a second row (the cases where a naive ``p (log p - log q)`` gives NaN or inf)."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 7, generator=g) * 2, torch.randn(2, 3, 7, generator=g) * 2
    t[0, 1, 4] = -math.inf
    s[1, 2, 0] = -math.inf
    return s, t


def test_every_reverse_kl_caller_equals_the_float64_reference():
    s, t = _logits()
    want_B_J = _reference_reverse_kl(s, t)
    assert torch.isfinite(want_B_J).all()
    got = reverse_kl(s, t, reduction="none")
    torch.testing.assert_close(got.double(), want_B_J, rtol=1e-5, atol=1e-6)
    per_token = reverse_kl_per_token(s.view(-1, 7), t.view(-1, 7))
    torch.testing.assert_close(per_token.double(), want_B_J.view(-1), rtol=1e-5, atol=1e-6)
    mask = torch.tensor([[True, True, True], [True, False, True]])
    mean_J, count_J = reverse_kl_by_position(s, t, mask)
    assert count_J == [2, 1, 2]
    want_J = (want_B_J * mask).sum(0) / mask.sum(0)
    torch.testing.assert_close(torch.tensor(mean_J, dtype=torch.float64), want_J, rtol=1e-5, atol=0)


def test_text_logprobs_equal_a_float64_forward():
    """``compare.evaluate.text_logprobs`` (the comparison's KL/char) against the sum over the
    completion tokens of a float64 forward's log-softmax, on a tiny model."""
    from onpolicy.api import completion_rollout
    from onpolicy.compare.evaluate import text_logprobs
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.tiny import tiny_model_dir
    from onpolicy.types import Prompt

    path = tiny_model_dir("tiny", "bpe", seed=0)
    model, tok = load_model(path).eval(), load_tokenizer(path)
    prompts = [Prompt(text="2+2="), Prompt(text="The sky is")]
    texts = ["4", " blue today"]
    got = text_logprobs(model, tok, prompts, texts, stopped=[True, True])
    ro = completion_rollout(prompts, texts, tok)
    ref_model = load_model(path).double().eval()
    for value, p_ids, c_ids in zip(got, ro.prompt_ids_B, ro.completion_ids_B, strict=True):
        ids = torch.tensor([list(p_ids) + list(c_ids)])
        with torch.no_grad():
            logp_T_V = ref_model(ids).logits[0].log_softmax(-1)
        start = len(p_ids) - 1
        rows = logp_T_V[start : start + len(c_ids)]
        want = float(rows.gather(1, torch.tensor(c_ids)[:, None]).sum())
        assert value == pytest.approx(want, rel=1e-5, abs=1e-5)

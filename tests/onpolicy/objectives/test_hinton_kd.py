"""Hinton's mix in ``supervised_kd``: ``alpha * CE(gold) + (1 - alpha) * T^2 * KL_T``."""

from __future__ import annotations

import pytest
import torch

from onpolicy.api import completion_rollout, make_objective
from onpolicy.errors import ConfigError
from onpolicy.models import load_model, load_tokenizer
from onpolicy.teacher.local import LocalTeacher
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt

PAIRS = [("What is 2 plus 2?", "4, of course."), ("Hi", "Hello! How can I help?")]


@pytest.fixture(scope="module")
def models():
    tpath = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    tok = load_tokenizer(tpath)
    student = load_model(tiny_model_dir("tiny", "bpe", seed=0))
    padded = load_model(tiny_model_dir("tiny", "bpe", seed=0, pad_vocab_to=len(tok) + 13))
    return student, padded, tok, load_model(tpath, trainable=False)


@pytest.fixture(scope="module")
def gold(models):
    tok = models[2]
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q, _ in PAIRS]
    return completion_rollout(prompts, [a for _, a in PAIRS], tok)


def _scores(teacher, tok, ro):
    return LocalTeacher(teacher, tok, tok, mode="same").score(ro)


def _loss_and_grads(obj, student, ro, scores):
    student.zero_grad(set_to_none=True)
    out = obj.loss(student, ro, scores)
    out.loss_sum.backward()
    grads = [p.grad.clone() for p in student.parameters()]
    student.zero_grad(set_to_none=True)
    return out, grads


def _reference(student, teacher, ro, alpha, temperature, vocab, beta=0.0):
    """float64, row by row, unpadded: explicit sums over the ``vocab`` real rows."""
    total = torch.zeros((), dtype=torch.float64)
    for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
        ids = torch.tensor([p + c])
        zs = student(input_ids=ids).logits[0, len(p) - 1 : -1, :vocab].double()
        with torch.no_grad():
            zt = teacher(input_ids=ids).logits[0, len(p) - 1 : -1, :vocab].double()
        ce = -zs.log_softmax(-1).gather(1, torch.tensor(c)[:, None]).sum()
        ps, pt = (zs / temperature).softmax(-1), (zt / temperature).softmax(-1)
        if beta == 0.0:
            soft = (pt * (pt.log() - ps.log())).sum()
        else:
            m = beta * pt + (1 - beta) * ps
            soft = beta * (pt * (pt.log() - m.log())).sum()
            soft = soft + (1 - beta) * (ps * (ps.log() - m.log())).sum()
        total = total + alpha * ce + (1 - alpha) * temperature**2 * soft
    return total


@pytest.mark.parametrize(
    ("alpha", "temperature", "beta", "padded"),
    [(0.3, 2.0, 0.0, False), (0.7, 0.5, 0.0, True), (0.0, 3.0, 0.0, True), (0.5, 1.5, 0.4, False)],
)
def test_value_and_gradients_match_a_float64_reference(
    models, gold, alpha, temperature, beta, padded
):
    student, padded_student, tok, teacher = models
    s = padded_student if padded else student
    obj = make_objective("supervised_kd", alpha=alpha, temperature=temperature, beta=beta)
    out, got = _loss_and_grads(obj, s, gold, _scores(teacher, tok, gold))
    assert out.num_tokens == sum(len(c) for c in gold.completion_ids_B)
    ref = _reference(s, teacher, gold, alpha, temperature, len(tok), beta)
    ref.backward()
    torch.testing.assert_close(out.loss_sum.double(), ref.detach(), rtol=1e-4, atol=1e-4)
    for g, p in zip(got, s.parameters(), strict=True):
        torch.testing.assert_close(g.double(), p.grad.double(), rtol=1e-3, atol=1e-5)
    s.zero_grad(set_to_none=True)
    if padded:  # the padded rows are outside both softmaxes: they get no gradient at all
        assert s.get_output_embeddings().weight.shape[0] == len(tok) + 13
        assert float(got[-1][len(tok) :].abs().max()) == 0.0


def test_alpha_zero_is_plain_kl_and_alpha_one_is_plain_ce(models, gold):
    student, _, tok, teacher = models
    scores = _scores(teacher, tok, gold)
    plain_kl, kl_grads = _loss_and_grads(make_objective("supervised_kd"), student, gold, scores)
    for chunked in (False, True):  # alpha=0, T=1 is the old objective on every path
        sc = LocalTeacher(teacher, tok, tok, mode="same", hidden=chunked).score(gold)
        obj = make_objective("supervised_kd", alpha=0.0, chunked=chunked)
        out, _ = _loss_and_grads(obj, student, gold, sc)
        torch.testing.assert_close(out.loss_sum, plain_kl.loss_sum, rtol=1e-5, atol=1e-5)
    # the dense mix at alpha -> 0 reaches the same KL value and gradients (a separate code path)
    mixed, mixed_grads = _loss_and_grads(
        make_objective("supervised_kd", alpha=1e-12), student, gold, scores
    )
    torch.testing.assert_close(mixed.loss_sum, plain_kl.loss_sum, rtol=1e-5, atol=1e-5)
    for a, b in zip(mixed_grads, kl_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    sft, sft_grads = _loss_and_grads(make_objective("sft"), student, gold, None)
    for temperature in (1.0, 4.0):  # alpha=1: the teacher and T play no part
        obj = make_objective("supervised_kd", alpha=1.0, temperature=temperature)
        ce, ce_grads = _loss_and_grads(obj, student, gold, scores)
        torch.testing.assert_close(ce.loss_sum, sft.loss_sum, rtol=1e-5, atol=1e-5)
        assert ce.metrics["nll_sum"] == pytest.approx(sft.loss_sum.item(), rel=1e-5)
        for a, b in zip(ce_grads, sft_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _logit_matching(student, teacher, ro, vocab):
    """The large-T limit of ``T^2 * KL_T``:
    ``sum_n |(z_s - mean z_s) - (z_t - mean z_t)|^2 / 2V`` (Hinton et al. 2015, section 2.1)."""
    total = torch.zeros(())
    for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
        ids = torch.tensor([p + c])
        zs = student(input_ids=ids).logits[0, len(p) - 1 : -1, :vocab]
        with torch.no_grad():
            zt = teacher(input_ids=ids).logits[0, len(p) - 1 : -1, :vocab]
        d = (zs - zs.mean(-1, keepdim=True)) - (zt - zt.mean(-1, keepdim=True))
        total = total + (d**2).sum() / (2 * vocab)
    return total


def _rel_err(got, want):
    num = sum(float((g - w).norm() ** 2) for g, w in zip(got, want, strict=True)) ** 0.5
    return num / sum(float(w.norm() ** 2) for w in want) ** 0.5


def test_the_t_squared_factor_keeps_the_gradient_scale_as_t_grows(models, gold):
    student, _, tok, teacher = models
    scores = _scores(teacher, tok, gold)
    student.zero_grad(set_to_none=True)
    limit = _logit_matching(student, teacher, gold, len(tok))
    limit.backward()
    want = [p.grad.clone() for p in student.parameters()]
    student.zero_grad(set_to_none=True)
    errors, norms = {}, {}
    for temperature in (1.0, 4.0, 30.0, 300.0):
        obj = make_objective("supervised_kd", temperature=temperature)
        out, grads = _loss_and_grads(obj, student, gold, scores)
        errors[temperature] = _rel_err(grads, want)
        norms[temperature] = sum(float(g.norm() ** 2) for g in grads) ** 0.5
        if temperature == 300.0:
            assert out.loss_sum.item() == pytest.approx(limit.item(), rel=0.02)
    # T^2 * KL_T -> the logit-matching limit, its error shrinking like 1/T
    assert errors[300.0] < 0.02 and errors[300.0] < errors[30.0] / 5
    # so the gradient's scale stays the same order once T is past the peaky regime (here 87 at
    # T=1, 35 at T=4, 14 at T=300), while KL_T's alone shrinks like 1/T^2 (by 5,600x from 4 to 300)
    assert norms[4.0] / norms[300.0] < 3 and norms[30.0] / norms[300.0] < 1.5


def test_empty_completions_and_bad_options(models, gold):
    student, _, tok, teacher = models
    ro = completion_rollout([Prompt(text="a")], [""], tok, end_with_turn_end=False)
    out = make_objective("supervised_kd", alpha=0.5, temperature=2.0).loss(
        student, ro, _scores(teacher, tok, ro)
    )
    assert out.num_tokens == 0 and out.loss_sum.item() == 0.0
    out.loss_sum.backward()
    student.zero_grad(set_to_none=True)
    with pytest.raises(ConfigError, match=r"alpha=1\.5"):
        make_objective("supervised_kd", alpha=1.5)
    with pytest.raises(ConfigError, match="chunked: false"):
        make_objective("supervised_kd", alpha=0.5, chunked=True)
    top_k = LocalTeacher(teacher, tok, tok, mode="same", top_k=8).score(gold)
    with pytest.raises(ConfigError, match="full logits"):
        make_objective("supervised_kd", alpha=0.5).loss(student, gold, top_k)

"""Every registered same-tokenizer objective through the same checks, on tiny real models, plus
independent float64 references for the values."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_same_pair import same_tokenizer_pair

from onpolicy.api import completion_rollout, make_objective
from onpolicy.chat import render_prompts
from onpolicy.errors import ConfigError
from onpolicy.objectives.base import OBJECTIVES, teacher_output
from onpolicy.objectives.common import on_policy_share
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.teacher.types import TopKScores
from onpolicy.types import Prompt, SamplingParams

CASES = {  # name -> (params, is a divergence: student == teacher gives 0)
    "reverse_kl": ({}, True),
    "reverse_kl_chunked": ({"chunked": True}, True),
    "reverse_kl_topk": ({}, True),
    "reverse_kl_topk_chunked": ({"chunked": True}, True),
    "supervised_kd_topk_chunked": ({"chunked": True}, True),
    "gkd": ({"lmbda": 0.5, "beta": 0.3, "temperature": 0.8}, True),
    "supervised_kd": ({}, True),
    "supervised_kd_chunked": ({"chunked": True}, True),
    "sft": ({}, False),
    "policy_gradient": ({}, True),
    "policy_gradient_tis": ({"clip_mode": "tis", "reward_fn": lambda ro: [1.0] * len(ro)}, False),
}
SAME_TOKENIZER = {"reverse_kl", "gkd", "supervised_kd", "sft", "policy_gradient"}


def _objective(case):
    params, _ = CASES[case]
    return make_objective(_base(case), **params)


def _base(case):
    return case.removesuffix("_chunked").removesuffix("_tis").removesuffix("_topk")


@pytest.fixture(scope="module")
def models():
    p = same_tokenizer_pair()
    return p.student, p.tokenizer, p.teacher


@pytest.fixture(scope="module")
def rollout(models):
    student, tok, _ = models
    prompts = [
        Prompt(messages=({"role": "user", "content": q},)) for q in ("What is 2 plus 2?", "Hi")
    ]
    backend = HFRolloutBackend(student, tok)
    return backend.generate(render_prompts(tok, prompts), SamplingParams(10, n=2, seed=3), prompts)


def _scores(teacher, tok, ro, case=""):
    top_k = 16 if "topk" in case else 0
    return LocalTeacher(
        teacher, tok, tok, mode="same", hidden="chunked" in case and not top_k, top_k=top_k
    ).score(ro)


def test_every_builtin_is_registered_and_tested():
    import onpolicy.objectives  # noqa: F401

    assert set(OBJECTIVES) >= SAME_TOKENIZER
    assert {c.split("_chunked")[0].split("_tis")[0] for c in CASES} >= SAME_TOKENIZER


@pytest.mark.parametrize("case", sorted(CASES))
def test_contract(case, models, rollout):
    student, tok, teacher = models
    obj = _objective(case)
    scores = _scores(teacher, tok, rollout, case) if obj.needs_teacher else None
    student.zero_grad(set_to_none=True)
    out = obj.loss(student, rollout, scores)
    assert out.loss_sum.dim() == 0 and torch.isfinite(out.loss_sum)
    assert out.num_tokens == int(rollout.to_padded(0).completion_mask_B_T.sum())
    out.loss_sum.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    assert obj.batch_source(0) in ("student", "teacher", "dataset")
    student.zero_grad(set_to_none=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_objective_declares_the_teacher_variant_it_needs(case):
    """The trainer builds the teacher from ``teacher_output`` alone (never objective options):
    a chunked objective must ask for ``hidden`` (``HiddenScores``)."""
    want = "hidden" if "chunked" in case else "token" if "policy_gradient" in case else "logits"
    assert teacher_output(_objective(case)) == want


@pytest.mark.parametrize("case", sorted(c for c, (_, div) in CASES.items() if div))
def test_student_equal_to_teacher_gives_zero(case, models, rollout):
    _, tok, teacher = models
    twin = copy.deepcopy(teacher).requires_grad_(True)
    obj = _objective(case)
    out = obj.loss(twin, rollout, _scores(teacher, tok, rollout, case))
    assert abs(out.loss_sum.item()) < 1e-4


def _reference_divergence(student, teacher, ro, beta):
    """float64, per row, unpadded, explicit sums over the vocabulary."""
    total = torch.zeros((), dtype=torch.float64)
    for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
        ids = torch.tensor([p + c])
        sl = student(input_ids=ids).logits[0, len(p) - 1 : -1].double()
        with torch.no_grad():
            tl = teacher(input_ids=ids).logits[0, len(p) - 1 : -1].double()
        ps, pt = sl.softmax(-1), tl.softmax(-1)
        if beta == 1.0:
            total = total + (ps * (ps.log() - pt.log())).sum()
        elif beta == 0.0:
            total = total + (pt * (pt.log() - ps.log())).sum()
        else:
            m = beta * pt + (1 - beta) * ps
            total = total + beta * (pt * (pt.log() - m.log())).sum()
            total = total + (1 - beta) * (ps * (ps.log() - m.log())).sum()
    return total


@pytest.mark.parametrize(
    ("name", "params", "beta"),
    [
        ("reverse_kl", {}, 1.0),
        ("reverse_kl", {"beta": 0.5}, 0.5),
        ("supervised_kd", {}, 0.0),
        ("reverse_kl", {"chunked": True}, 1.0),
    ],
)
def test_divergence_value_and_gradient_match_float64_reference(name, params, beta, models, rollout):
    student, tok, teacher = models
    obj = make_objective(name, **params)
    student.zero_grad(set_to_none=True)
    case = "chunked" if params.get("chunked") else ""
    out = obj.loss(student, rollout, _scores(teacher, tok, rollout, case))
    out.loss_sum.backward()
    got = [p.grad.clone() for p in student.parameters()]
    student.zero_grad(set_to_none=True)
    ref = _reference_divergence(student, teacher, rollout, beta)
    ref.backward()
    torch.testing.assert_close(out.loss_sum.double(), ref.detach(), rtol=1e-4, atol=1e-4)
    for g, p in zip(got, student.parameters(), strict=True):
        torch.testing.assert_close(g.double(), p.grad.double(), rtol=1e-3, atol=1e-5)
    student.zero_grad(set_to_none=True)


def test_sparse_teacher_with_the_whole_vocabulary_equals_dense(models, rollout):
    student, tok, teacher = models
    dense = _scores(teacher, tok, rollout)
    full = LocalTeacher(teacher, tok, tok, mode="same", top_k=len(tok)).score(rollout)
    assert isinstance(full, TopKScores) and full.topk_ids_N_K.shape[1] == len(tok)
    for beta, chunked in ((0.0, False), (0.5, False), (1.0, False), (0.0, True), (1.0, True)):
        obj = make_objective("reverse_kl", beta=beta, chunked=chunked)  # chunked: top-k chunked
        student.zero_grad(set_to_none=True)
        got = obj.loss(student, rollout, full).loss_sum
        got.backward()
        grads = [p.grad.clone() for p in student.parameters()]
        student.zero_grad(set_to_none=True)
        want = make_objective("reverse_kl", beta=beta).loss(student, rollout, dense).loss_sum
        want.backward()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        for g, p in zip(grads, student.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-3, atol=1e-5)
    student.zero_grad(set_to_none=True)
    with pytest.raises(ConfigError, match="top-k teacher"):
        make_objective("reverse_kl", temperature=2.0).loss(student, rollout, full)


def test_sft_is_the_summed_nll(models, rollout):
    student, _, _ = models
    out = make_objective("sft").loss(student, rollout, None)
    batch = rollout.to_padded(0)
    hf = student(input_ids=batch.input_ids_B_T, attention_mask=batch.attention_mask_B_T)
    labels = batch.labels()
    want = torch.nn.functional.cross_entropy(
        hf.logits.flatten(0, 1).float(), labels.flatten(), reduction="sum"
    )
    torch.testing.assert_close(out.loss_sum, want, rtol=1e-5, atol=1e-4)


def test_policy_gradient_on_policy_gradient_is_reinforce(models, rollout):
    student, tok, teacher = models
    scores = _scores(teacher, tok, rollout)
    student.zero_grad(set_to_none=True)
    make_objective("policy_gradient").loss(student, rollout, scores).loss_sum.backward()
    got = [p.grad.clone() for p in student.parameters()]
    student.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for b, (p, c) in enumerate(zip(rollout.prompt_ids_B, rollout.completion_ids_B, strict=True)):
        ids = torch.tensor([p + c])
        lp = torch.log_softmax(student(input_ids=ids).logits[0, len(p) - 1 : -1], -1)
        lp = lp.gather(1, ids[0, len(p) :, None]).squeeze(1)
        start = sum(scores.num_tokens_B[:b])
        adv = scores.token_logprobs_N[start : start + len(c)] - lp.detach()
        total = total - (adv * lp).sum()
    total.backward()
    for g, p in zip(got, student.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-3, atol=1e-5)
    student.zero_grad(set_to_none=True)
    reward = make_objective("policy_gradient", kl_coef=0.0, reward_fn=lambda ro: [2.0] * len(ro))
    out = reward.loss(student, rollout, scores)
    assert abs(out.loss_sum.item() + 2.0 * out.num_tokens) < 1e-2  # ratio 1: -sum(A)


def test_empty_completions_are_an_explicit_zero(models):
    student, tok, teacher = models
    prompts = [Prompt(text="a"), Prompt(text="b")]
    ro = completion_rollout(prompts, ["", ""], tok, end_with_turn_end=False)
    for name in ("reverse_kl", "sft", "policy_gradient", "supervised_kd"):
        obj = make_objective(name)
        scores = _scores(teacher, tok, ro) if obj.needs_teacher else None
        out = obj.loss(student, ro, scores)
        assert out.num_tokens == 0 and out.loss_sum.item() == 0.0
        out.loss_sum.backward()  # no error, no NaN
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    student.zero_grad(set_to_none=True)


def test_gkd_lambda_is_decided_per_step_from_the_seed():
    gkd = make_objective("gkd", lmbda=0.3, seed=7, off_policy="teacher")
    draws = [gkd.batch_source(s) for s in range(4000)]
    assert draws == [
        make_objective("gkd", lmbda=0.3, seed=7, off_policy="teacher").batch_source(s)
        for s in range(4000)
    ]
    assert set(draws) == {"student", "teacher"}
    assert abs(draws.count("student") / 4000 - 0.3) < 0.03
    assert [on_policy_share(1, s, 0.3) for s in range(50)] != [
        on_policy_share(2, s, 0.3) for s in range(50)
    ]
    assert {make_objective("gkd", lmbda=0.0).batch_source(s) for s in range(50)} == {"dataset"}
    assert {make_objective("gkd", lmbda=1.0).batch_source(s) for s in range(50)} == {"student"}


def test_bad_options_are_config_errors(models, rollout):
    with pytest.raises(ConfigError, match="beta"):
        make_objective("reverse_kl", beta=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        make_objective("gkd", temperature=0)
    with pytest.raises(ConfigError, match="unknown objective"):
        make_objective("nope")
    with pytest.raises(ConfigError, match="needs teacher scores"):
        make_objective("reverse_kl").loss(models[0], rollout, None)


def test_objectives_declare_the_teacher_output_and_one_factory_passes_the_seed():
    from onpolicy.objectives.base import make_objective as build
    from onpolicy.objectives.base import teacher_output

    assert teacher_output(make_objective("reverse_kl", chunked=True)) == "hidden"
    assert teacher_output(make_objective("gkd")) == "logits"
    assert teacher_output(make_objective("sft")) == "logits"  # declares nothing
    assert build("gkd", {"lmbda": 0.5}, seed=7).seed == 7
    assert build("gkd", {"lmbda": 0.5, "seed": 3}, seed=7).seed == 3
    assert build("reverse_kl", {}, seed=7) == make_objective("reverse_kl")  # takes no seed
    with pytest.raises(ConfigError, match="bad params"):
        make_objective("gkd", nope=1)

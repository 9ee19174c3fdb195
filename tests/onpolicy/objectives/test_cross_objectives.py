"""The cross-tokenizer objectives next_byte and gold (prefix and TRL token semantics) on two tiny
real models with different tokenizers (byte-level BPE student, char teacher with byte fallback):
the contract, identical models give 0, and next_byte training lowers the held-out divergence."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_cross_pair import QUESTIONS, scored_cross_pair, self_scored_rollout

from onpolicy.api import completion_rollout, make_objective, step
from onpolicy.chat import render_prompts
from onpolicy.errors import ConfigError
from onpolicy.models import load_model
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt, SamplingParams

CASES = {
    "next_byte": {},
    "next_byte_boundaries": {"within_tokens": False},
    "next_byte_reference": {"reference_kl": 0.5},
    "gold": {},
    "gold_token": {"matched": "token", "beta": 1.0},
}


def _make(case: str):
    name = case.split("_")[0] if case.startswith("gold") else "next_byte"
    if CASES[case].get("matched") == "token":  # TRL's semantics: a parity option, it warns
        with pytest.warns(UserWarning, match="matched=token"):
            return make_objective(name, **CASES[case])
    return make_objective(name, **CASES[case])


@pytest.fixture(scope="module")
def setup():
    p = scored_cross_pair(seed=1, mode="auto")
    return p.student, p.student_tokenizer, p.teacher, p.teacher_tokenizer, p.rollout, p.scorer


@pytest.mark.parametrize("case", sorted(CASES))
def test_contract(case, setup):
    student, _, teacher, _, ro, scorer = setup
    student.zero_grad(set_to_none=True)
    out = _make(case).loss(student, ro, scorer.score(ro))
    assert out.loss_sum.dim() == 0 and torch.isfinite(out.loss_sum) and out.num_tokens > 0
    out.loss_sum.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    student.zero_grad(set_to_none=True)


@pytest.mark.parametrize("case", ["next_byte", "next_byte_boundaries", "gold"])
def test_identical_models_in_cross_mode_give_zero(case, setup):
    _, _, teacher, ttok, _, _ = setup
    ro, scores = self_scored_rollout(teacher, ttok)
    twin = copy.deepcopy(teacher).requires_grad_(True)
    out = _make(case).loss(twin, ro, scores)
    assert out.num_tokens > 0 and abs(out.loss_sum.item()) < 1e-4


def test_bad_options_are_clear_errors():
    with pytest.raises(ConfigError, match="matched"):
        make_objective("gold", matched="bytes")
    with pytest.raises(ConfigError, match="beta"):
        make_objective("next_byte", beta=1.5)


def test_next_byte_lowers_the_held_out_divergence_to_the_teacher(setup):
    """On-policy next_byte steps lower the next-byte divergence measured on held-out prompts,
    teacher-forced on texts the teacher wrote (a metric the training never saw)."""
    _, stok, teacher, ttok, _, scorer = setup
    student = load_model(tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300))
    held = [Prompt(messages=({"role": "user", "content": q},)) for q in ("Say hi.", "2 + 2?")]
    t_ro = HFRolloutBackend(teacher, ttok).generate(
        render_prompts(ttok, held), SamplingParams(24, temperature=0.7, seed=5), held
    )
    fixed = completion_rollout(held, t_ro.texts_B, stok)
    fixed_scores = scorer.score(fixed)
    metric = make_objective("next_byte", beta=0.5, reference_kl=0.0)  # the divergence alone

    def held_out() -> float:
        with torch.no_grad():
            out = metric.loss(student, fixed, fixed_scores)
        return out.loss_sum.item() / out.num_tokens

    train = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS]
    backend = HFRolloutBackend(student, stok)
    objective = make_objective("next_byte")
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.0)
    before = held_out()
    for i in range(20):
        with torch.no_grad():
            ro = backend.generate(
                render_prompts(stok, train), SamplingParams(24, seed=i, n=2), train
            )
        step(optimizer, objective.loss(student, ro, scorer.score(ro)), model=student)
    after = held_out()
    # 0.362 -> 0.290 (-20%); 0.85 leaves room for float rounding, which moves the sampled path
    assert after < 0.85 * before, (before, after)


def test_reference_kl_anchors_to_the_first_step_weights(setup):
    """The anchor is 0 at the first call, then a frozen copy that the moving student leaves."""
    *_, ro, scorer = setup
    student = load_model(tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300))
    objective = make_objective("next_byte", reference_kl=1.0)
    scores = scorer.score(ro)
    first = objective.loss(student, ro, scores)
    assert first.metrics["next_byte/reference_kl_sum"] == pytest.approx(0.0, abs=1e-6)
    frozen = [p.detach().clone() for p in objective._reference.policy.model.parameters()]
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2, weight_decay=0.0)
    step(optimizer, first, model=student)
    second = objective.loss(student, ro, scores)
    assert second.metrics["next_byte/reference_kl_sum"] > 1e-4
    assert all(
        torch.equal(a, b)
        for a, b in zip(frozen, objective._reference.policy.model.parameters(), strict=True)
    )
    no_anchor = make_objective("next_byte", reference_kl=0.0).loss(student, ro, scores)
    assert "next_byte/reference_kl_sum" not in no_anchor.metrics


def test_lora_reference_is_the_base_model_with_no_copy(setup):
    """A LoRA student's anchor is its base (adapters off): equal to the base model's outputs after
    the adapters moved, and no copy of the model is made."""
    from onpolicy.models import LoraSpec, apply_lora
    from onpolicy.objectives.common import student_forward

    *_, ro, scorer = setup
    path = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    base = load_model(path, trainable=False)
    student = apply_lora(load_model(path), LoraSpec(rank=4, target_modules="all-linear"))
    objective = make_objective("next_byte", reference_kl=1.0)
    scores = scorer.score(ro)
    first = objective.loss(student, ro, scores)
    assert first.metrics["next_byte/reference_kl_sum"] == pytest.approx(0.0, abs=1e-6)
    assert objective._reference.policy.model is None and objective._reference.policy.adapters_off
    optimizer = torch.optim.AdamW(
        [p for p in student.parameters() if p.requires_grad], lr=3e-2, weight_decay=0.0
    )
    for _ in range(2):
        step(optimizer, objective.loss(student, ro, scores), model=student)
    moved = student_forward(student, ro, None).logits_N_V.detach()
    want = student_forward(base, ro, None).logits_N_V
    got = objective._reference.logits(student, ro).logits_N_V
    assert not torch.allclose(moved, want, atol=1e-4)  # the adapters did move the student
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert objective.loss(student, ro, scores).metrics["next_byte/reference_kl_sum"] > 1e-4

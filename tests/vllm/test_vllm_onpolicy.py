"""An on-policy reverse-KL run of 20 steps with the ``vllm`` backend (weights synced after every
step) lowers the teacher-forced KL to the teacher like the same run with the ``hf`` backend."""

from __future__ import annotations

import pytest
import torch

vllm = pytest.importorskip("vllm")

from onpolicy.chat import render_prompts  # noqa: E402
from onpolicy.forward import forward_completions  # noqa: E402
from onpolicy.losses.divergences import reverse_kl  # noqa: E402
from onpolicy.models import load_model, load_tokenizer  # noqa: E402
from onpolicy.rollout.base import make_backend  # noqa: E402
from onpolicy.tiny import corpus_pairs  # noqa: E402
from onpolicy.types import Prompt, Rollout, SamplingParams  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

STEPS = 20
SAMPLING = SamplingParams(max_new_tokens=12, temperature=1.0, n=2)


def _prompts(start, count):
    pairs = corpus_pairs()[start : start + count]
    return [Prompt(messages=({"role": "user", "content": q},)) for q, _ in pairs]


@pytest.fixture(scope="module")
def setup(tiny_teacher_path):
    teacher = load_model(tiny_teacher_path, trainable=False)
    tok = load_tokenizer(tiny_teacher_path)
    return teacher, tok, tiny_teacher_path


def _eval_kl(student, teacher, tok) -> float:
    """Teacher-forced KL(student || teacher) on the student's own samples for held-out prompts
    (sampled by the same ``hf`` evaluator and seed in both runs)."""
    held_out = _prompts(100, 8)
    ro = make_backend("hf", model=student, tokenizer=tok).generate(
        render_prompts(tok, held_out), SamplingParams(max_new_tokens=12, n=2, seed=1234), held_out
    )
    return float(_kl(student, teacher, ro, tok, grad=False))


def _kl(student, teacher, rollout: Rollout, tok, grad: bool) -> torch.Tensor:
    """Mean per-token KL(student || teacher) over the rollout's completion tokens."""
    batch = rollout.to_padded(tok.pad_token_id)
    with torch.no_grad():
        t = forward_completions(teacher, batch, len(tok))
    with torch.set_grad_enabled(grad):
        s = forward_completions(student, batch, len(tok))
    return reverse_kl(s.logits_N_V, t.logits_N_V)


def _noisy_copy(path):
    """The student: the teacher's weights with Gaussian noise (1 std per tensor), so the run has a
    clear distance to close in 20 steps."""
    student = load_model(path)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std())
    return student


def _run(backend_name, setup) -> tuple[float, float]:
    teacher, tok, path = setup
    student = _noisy_copy(path)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-4)
    if backend_name == "hf":
        backend = make_backend("hf", model=student, tokenizer=tok)
    else:
        # called as the trainer calls every backend (model, tokenizer) + rollout.vllm keys
        backend = make_backend(
            "vllm",
            model=student,
            tokenizer=tok,
            dtype="float32",
            max_model_len=256,
            sync="weights",
            gpu_memory_utilization=0.3,
            kv_cache_space_gib=1.0,
        )
        backend.sync_weights(student, 0)  # the engine starts from the student's weights
    try:
        before = _eval_kl(student, teacher, tok)
        for step in range(1, STEPS + 1):
            prompts = _prompts((step * 4) % 96, 4)
            ro = backend.generate(
                render_prompts(tok, prompts),
                SamplingParams(**{**SAMPLING.__dict__, "seed": step}),
                prompts,
            )
            assert ro.policy_version == step - 1  # sampled from the weights after the last step
            loss = _kl(student, teacher, ro, tok, grad=True)
            loss.backward()
            opt.step()
            opt.zero_grad()
            backend.sync_weights(student, step)
        after = _eval_kl(student, teacher, tok)
    finally:
        backend.close()
    return before, after


def test_vllm_on_policy_run_lowers_the_kl_like_hf(setup):
    hf_before, hf_after = _run("hf", setup)
    vl_before, vl_after = _run("vllm", setup)
    assert vl_before == pytest.approx(hf_before)  # same initial student
    assert hf_after < 0.5 * hf_before and vl_after < 0.5 * vl_before
    drop_ratio = (vl_before - vl_after) / (hf_before - hf_after)
    print(f"KL hf {hf_before:.3f} -> {hf_after:.3f}, vllm {vl_before:.3f} -> {vl_after:.3f}")
    assert 0.5 < drop_ratio < 2.0, (hf_before, hf_after, vl_before, vl_after)

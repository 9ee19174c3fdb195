"""The trainer runs the chunked divergence (hidden states + LM heads a block at a time, the teacher
skipping its own full LM-head pass) and it trains exactly as the dense form: same losses, same
weights, same evaluation."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from trainer_configs import make_config

from onpolicy.trainer import train


def _run(tmp_path, chunked: bool, *extra: str):
    cfg = make_config(
        tmp_path / f"chunked={chunked}{'-'.join(extra)}",
        f"objective.params.chunked={chunked}",
        *extra,
        "rollout.temperature=0",  # the same rollouts on both runs
        "optim.optimizer=sgd",
        "optim.lr=0.5",
        "train.steps=2",
    )
    torch.manual_seed(0)
    return train(cfg)


@pytest.mark.parametrize("objective", ["reverse_kl"])
def test_chunked_objective_trains_like_the_dense_one(tmp_path, objective):
    dense, chunked = _run(tmp_path, False), _run(tmp_path, True)
    assert chunked.steps == dense.steps == 2
    torch.testing.assert_close(
        torch.tensor(chunked.losses), torch.tensor(dense.losses), rtol=1e-5, atol=1e-6
    )
    assert dense.losses[0] != dense.losses[1]  # the first step moved the student
    w_dense = load_file(str(dense.final_dir / "model.safetensors"))
    w_chunked = load_file(str(chunked.final_dir / "model.safetensors"))
    for key, value in w_dense.items():
        torch.testing.assert_close(w_chunked[key], value, rtol=1e-4, atol=1e-6)
    for key in ("eval/kl_per_token", "eval/teacher_logprob_per_token"):
        if key in dense.eval_after:
            assert chunked.eval_after[key] == pytest.approx(dense.eval_after[key], rel=1e-5)
    assert "eval/kl_per_token" in chunked.eval_after


def test_a_top_k_teacher_with_chunked_trains_like_the_sparse_loss(tmp_path):
    """``chunked: true`` with a top-k teacher (``teacher.top_k``) takes the chunked top-k loss by
    default (the student's [N, V] logits never exist at once) and trains as the sparse loss on
    full logits does."""
    sparse = _run(tmp_path, False, "teacher.top_k=8")
    chunked = _run(tmp_path, True, "teacher.top_k=8")
    assert chunked.steps == sparse.steps == 2 and sparse.losses[0] != sparse.losses[1]
    torch.testing.assert_close(
        torch.tensor(chunked.losses), torch.tensor(sparse.losses), rtol=1e-5, atol=1e-6
    )
    w_sparse = load_file(str(sparse.final_dir / "model.safetensors"))
    w_chunked = load_file(str(chunked.final_dir / "model.safetensors"))
    for key, value in w_sparse.items():
        torch.testing.assert_close(w_chunked[key], value, rtol=1e-4, atol=1e-6)

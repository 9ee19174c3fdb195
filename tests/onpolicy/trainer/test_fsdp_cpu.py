"""FSDP2 on CPU under ``accelerate launch --config_file configs/accelerate/fsdp_cpu.yaml``: two
sharded processes, stopped after a checkpoint and resumed, give the same losses and weights as one
uninterrupted process on the same prompts; ``final/`` is a plain Hugging Face folder."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from launch_helpers import losses, train_under_accelerate
from safetensors.torch import load_file
from trainer_configs import base_raw

from onpolicy.config import apply_overrides, from_dict
from onpolicy.trainer import train

# greedy rollouts (deterministic); constant learning rate (the same for any train.steps)
COMMON = ["rollout.temperature=0", "optim.scheduler=constant", "eval.num_prompts=0"]


def _write(tmp_path, name: str, overrides: list[str], steps: int) -> tuple:
    raw = apply_overrides(base_raw(tmp_path / name), [*COMMON, *overrides, f"train.steps={steps}"])
    raw["train"].update(micro_batch_size=1, grad_accum=2)  # 2 processes x 2 x 1 = 4 prompts/step
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, tmp_path / name


def _one_process(tmp_path, overrides: list[str], steps: int):
    one = from_dict(
        apply_overrides(base_raw(tmp_path / "one"), [*COMMON, *overrides, f"train.steps={steps}"])
    )
    one.train.micro_batch_size = 4  # 1 process x 1 x 4 = the same 4 prompts per step
    return train(one)


def _assert_same_weights(final_a, final_b, atol: float) -> None:
    a = load_file(str(final_a / "model.safetensors"))
    b = load_file(str(final_b / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=atol, msg=k)


def _stop_and_resume(tmp_path, opts: list[str]):
    """FSDP: 1 step (checkpoint at the end), then the same output_dir with 2 steps (resumes at
    step 1); then the uninterrupted 2-step run in one process. Returns (fsdp dir, one result)."""
    first, out = _write(tmp_path, "fsdp", opts, steps=1)
    train_under_accelerate("fsdp_cpu.yaml", first)
    ckpt = out / "checkpoints" / "step-00000001"
    assert (ckpt / "pytorch_model_fsdp.bin").is_file(), "not an FSDP checkpoint"
    resumed, _ = _write(tmp_path, "fsdp", opts, steps=2)
    train_under_accelerate("fsdp_cpu.yaml", resumed)
    return out, _one_process(tmp_path, opts, steps=2)


@pytest.mark.slow
def test_fsdp_resume_matches_one_uninterrupted_process(tmp_path):
    # AdamW (the default optimizer): step 2 runs after the resume and needs the moments saved in
    # the FSDP checkpoint (restarting them moves weights by ~lr = 3e-3) and rollouts from the
    # unsharded copy refreshed at load (a stale copy, i.e. step-0 weights, changes the loss).
    # Adam is blind to a gradient scale: the gradient norms are compared too. Adam divides by
    # sqrt(v): last-bit gradient differences (reduction order) move weights by up to ~1e-5,
    # hence atol 1e-4. The final evaluation runs on rank 0 alone (no collective).
    opts = ["optim.optimizer=adamw", "optim.lr=3e-3", "optim.grad_clip=1.0", "eval.num_prompts=2"]
    out, one = _stop_and_resume(tmp_path, opts)
    fsdp_records, one_records = _records(out), _records(one.output_dir)
    assert losses(out) == pytest.approx(losses(one.output_dir), rel=1e-5)
    assert len(losses(out)) == 2
    norms = [r["train/grad_norm"] for r in fsdp_records if "train/grad_norm" in r]
    assert norms == pytest.approx(
        [r["train/grad_norm"] for r in one_records if "train/grad_norm" in r], rel=1e-5
    )
    final_eval = [r for r in fsdp_records if r.get("final") == 1][-1]
    assert final_eval["eval/kl_per_token"] == pytest.approx(
        one.eval_after["eval/kl_per_token"], rel=1e-3
    )
    _assert_same_weights(one.final_dir, out / "final", atol=1e-4)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "final")  # a plain HF folder
    expected = load_file(str(one.final_dir / "model.safetensors"))
    for name, p in model.state_dict().items():
        torch.testing.assert_close(p, expected[name], rtol=1e-5, atol=1e-4, msg=name)


def _records(output_dir) -> list[dict]:
    return [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()]

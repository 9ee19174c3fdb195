"""The single-process parts of ``onpolicy.trainer.sharding`` and the FSDP resume helpers of
``checkpoint.py`` on a tiny real model (the multi-process paths: test_fsdp_cpu.py,
test_deepspeed_cpu.py)."""

from __future__ import annotations

import pytest
import torch

from onpolicy.errors import TrainingError
from onpolicy.models import LoraSpec, apply_lora, load_model, load_tokenizer
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.tiny import tiny_model_dir
from onpolicy.trainer.checkpoint import _restore_hyperparameters
from onpolicy.trainer.sharding import FullCopy, FullCopyBackend, no_accelerator_device
from onpolicy.types import SamplingParams


@pytest.fixture()
def student():
    return load_model(tiny_model_dir("tiny"))


def _train_once(model: torch.nn.Module) -> None:
    ids = torch.arange(3, 19).reshape(2, 8)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()


def test_full_copy_follows_trainable_parameters_only(student):
    model = apply_lora(student, LoraSpec(rank=2, target_modules=("q_proj",)))
    full = FullCopy(model)
    full.attach(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_once(model)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all("lora_" in n for n in changed)
    copy_params = dict(full.model.named_parameters())
    assert all(torch.equal(copy_params[n], before[n]) for n in changed)  # independent copy
    full.load_state_dict(full.state_dict())  # what accelerate calls after loading a checkpoint
    for n, p in model.named_parameters():
        assert torch.equal(copy_params[n], p), n
    assert not any(p.requires_grad for p in full.model.parameters())


def test_full_copy_refuses_a_module_without_its_parameters(student):
    full = FullCopy(student)
    with pytest.raises(RuntimeError, match="before attach"):
        full.refresh()
    full.attach(torch.nn.ModuleDict({"module": student}))  # names prefixed: nothing matches
    with pytest.raises(RuntimeError, match=r"0 of \d+ trainable parameters"):
        full.refresh()


def test_full_copy_backend_samples_the_refreshed_copy(student):
    tok = load_tokenizer(tiny_model_dir("tiny"))
    full = FullCopy(student)
    full.attach(student)
    backend = FullCopyBackend(HFRolloutBackend(full.model, tok), full)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    prompt = [tok.encode("hello there")]
    _train_once(student)
    stale = backend.generate(prompt, greedy).sampling_logprobs_B[0]
    backend.sync_weights(student, step=1)  # every process calls this after an optimizer step
    fresh = backend.generate(prompt, greedy)
    reference = HFRolloutBackend(student, tok).generate(prompt, greedy)
    assert fresh.completion_ids_B == reference.completion_ids_B
    got = fresh.sampling_logprobs_B[0]
    assert got == pytest.approx(reference.sampling_logprobs_B[0], abs=1e-5)
    assert got != pytest.approx(stale, abs=1e-3)
    assert backend.policy_version == 1  # other attributes are the wrapped backend's


def test_restore_hyperparameters_of_a_stateless_optimizer(student):
    opt = torch.optim.SGD(student.parameters(), lr=0.5, weight_decay=0.0)
    saved = [{**opt.param_groups[0], "lr": 0.125, "weight_decay": 0.01, "params": [0, 1]}]
    _restore_hyperparameters(opt, saved)
    assert opt.param_groups[0]["lr"] == 0.125 and opt.param_groups[0]["weight_decay"] == 0.01
    assert len(opt.param_groups[0]["params"]) == len(list(student.parameters()))
    with pytest.raises(TrainingError, match="parameter groups"):
        _restore_hyperparameters(opt, saved * 2)


def test_cpu_machine_builds_a_cpu_accelerator(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert no_accelerator_device() == (torch.accelerator.current_accelerator() is None)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # DeepSpeed brings its own
    assert not no_accelerator_device()

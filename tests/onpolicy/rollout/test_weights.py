"""Weight export for rollout engines: full weights, LoRA merged in float32 (no bf16 drift)."""

from __future__ import annotations

import copy

import pytest
import torch

from onpolicy.errors import ConfigError
from onpolicy.models import LoraSpec, apply_lora, load_model
from onpolicy.rollout.weights import full_weights, lora_delta, merged_lora_weights
from onpolicy.tiny import tiny_model_dir


@pytest.fixture(scope="module")
def base():
    return load_model(tiny_model_dir("tiny", "bpe", seed=0))


def _randomize_lora(model, seed, scale=0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_((torch.randn(p.shape, generator=gen) * scale).to(p.dtype))


def test_full_weights_are_the_state_dict_under_checkpoint_names(base):
    got = dict(full_weights(base))
    assert got.keys() == base.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in base.state_dict().items())
    assert all(t.dtype == torch.bfloat16 for t in dict(full_weights(base, torch.bfloat16)).values())


def test_merged_weights_equal_an_independent_float64_merge(base):
    student = apply_lora(
        copy.deepcopy(base), LoraSpec(rank=4, alpha=8, target_modules="all-linear")
    )
    _randomize_lora(student, seed=0)
    got = dict(merged_lora_weights(student))
    assert got.keys() == base.state_dict().keys()  # plain names, no lora_/base_layer keys
    peft_merged = copy.deepcopy(student).merge_and_unload()  # PEFT's own merge, as reference
    for name, ref in peft_merged.state_dict().items():
        torch.testing.assert_close(got[name], ref, atol=1e-6, rtol=0)
    layer = student.get_base_model().model.layers[1].mlp.down_proj
    a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
    want = layer.base_layer.weight.double() + (b @ a) * (8 / 4)
    torch.testing.assert_close(
        got["model.layers.1.mlp.down_proj.weight"].double(), want, atol=1e-6, rtol=0
    )


def test_bf16_base_never_drifts_across_syncs(base):
    """Every sync holds cast(W_base + current delta); PEFT's merge/unmerge in bf16 drifts."""
    student = apply_lora(
        copy.deepcopy(base).to(torch.bfloat16),
        LoraSpec(rank=4, alpha=8, target_modules="all-linear"),
    )
    layer = student.get_base_model().model.layers[0].self_attn.q_proj
    base_w = layer.base_layer.weight.detach().clone()
    for step in range(6):  # training steps: the adapter changes, then a sync
        _randomize_lora(student, seed=step, scale=0.3)
        got = dict(merged_lora_weights(student))["model.layers.0.self_attn.q_proj.weight"]
        want = (base_w.float() + lora_delta(layer)).to(torch.bfloat16)
        assert torch.equal(got, want)
        assert torch.equal(layer.base_layer.weight, base_w)
    # what merging in place would have done: the bf16 base drifts after merge + unmerge
    drifting = copy.deepcopy(student)
    for _ in range(6):
        drifting.merge_adapter()
        drifting.unmerge_adapter()
    drift_layer = drifting.get_base_model().model.layers[0].self_attn.q_proj
    assert not torch.equal(drift_layer.base_layer.weight, base_w)


def test_lora_delta_is_float32_and_sums_scaling_b_a(base):
    student = apply_lora(copy.deepcopy(base), LoraSpec(rank=2, alpha=6, target_modules=("v_proj",)))
    _randomize_lora(student, seed=3)
    layer = student.get_base_model().model.layers[0].self_attn.v_proj
    delta = lora_delta(layer)
    assert delta.dtype == torch.float32 and delta.shape == layer.base_layer.weight.shape
    ref = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * 3.0
    torch.testing.assert_close(delta, ref, atol=1e-7, rtol=0)


def test_full_weights_of_a_lora_model_is_a_clear_error(base):
    student = apply_lora(copy.deepcopy(base), LoraSpec(rank=2, target_modules=("q_proj",)))
    with pytest.raises(ConfigError, match="merged_lora_weights"):
        full_weights(student)

"""Loading, LoRA students (targets, save/reload, merged export), adapters off (self-distill)."""

from __future__ import annotations

import pytest
import torch

from onpolicy.errors import ConfigError
from onpolicy.models import (
    LoraSpec,
    adapters_disabled,
    apply_lora,
    export_merged,
    is_peft,
    linear_module_names,
    load_lora_student,
    load_model,
    load_tokenizer,
    resolve_dtype,
    save_student,
)
from onpolicy.tiny import tiny_model_dir

IDS = torch.tensor([[5, 9, 31, 47, 12, 8]])


@pytest.fixture(scope="module")
def tiny_dir():
    return tiny_model_dir("tiny", "bpe", seed=0)


def _lora(tiny_dir, targets=("q_proj", "v_proj")):
    model = apply_lora(load_model(tiny_dir), LoraSpec(rank=4, alpha=8, target_modules=targets))
    with torch.no_grad():  # LoRA B starts at zero: make the adapters change the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    return model


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_load_errors_and_dtypes(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("float8")
    model = load_model(tiny_dir, dtype="bf16", trainable=False)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_lora_trains_only_adapters_and_bad_target_names_modules(tiny_dir):
    model = _lora(tiny_dir)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and not any("k_proj" in n for n in trainable)
    assert "gate_proj" in linear_module_names(load_model(tiny_dir))
    with pytest.raises(ConfigError, match=r"\['qkv'\] do not exist.*'q_proj'"):
        apply_lora(load_model(tiny_dir), LoraSpec(target_modules=("q_proj", "qkv")))
    with pytest.raises(ConfigError, match="rank"):
        LoraSpec(rank=0)


def test_adapters_disabled_gives_the_base_model(tiny_dir):
    base = load_model(tiny_dir)
    model = _lora(tiny_dir)
    assert not torch.allclose(_logits(model), _logits(base))
    with adapters_disabled(model) as m:
        torch.testing.assert_close(_logits(m), _logits(base))
    assert not torch.allclose(_logits(model), _logits(base))  # adapters back on
    with adapters_disabled(base) as m:  # a plain model is its own base
        assert m is base


def test_adapter_save_reload_and_merged_export(tiny_dir, tmp_path):
    model, tok = _lora(tiny_dir), load_tokenizer(tiny_dir)
    want = _logits(model)
    save_student(model, tok, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "adapter" / "config.json").exists()  # adapters only
    reloaded = load_lora_student(tiny_dir, tmp_path / "adapter")
    torch.testing.assert_close(_logits(reloaded), want)
    export_merged(model, tok, tmp_path / "merged")
    merged = load_model(tmp_path / "merged")
    assert not is_peft(merged)
    torch.testing.assert_close(_logits(merged), want, atol=1e-5, rtol=1e-4)
    assert is_peft(model)  # the training model is untouched
    torch.testing.assert_close(_logits(model), want)

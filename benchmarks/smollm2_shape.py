"""SmolLM2-135M-Instruct's shape with random weights, for machines where the real checkpoint
cannot go (a lent GPU machine: no downloads, 64 MiB of files travel with the working tree).

- The tokenizer is the real one (byte-level BPE, 49,152 tokens, ChatML template), committed in
  ``benchmarks/smollm2_tokenizer/`` (``tokenizer.json`` re-written as compact JSON, ~1.6 MB),
  exported from ``onpolicy.offline.smollm2_dir()`` by ``python -m benchmarks.smollm2_shape``.
- The model is ``LlamaForCausalLM`` with SmolLM2-135M's exact config (the GGUF's: hidden 576,
  MLP 1536, 30 layers, 9 heads / 3 KV heads of 64, vocabulary 49,152, tied embeddings, RoPE theta
  100,000, RMSNorm eps 1e-5), float32, weights drawn with ``torch.manual_seed(0)`` by transformers'
  initializer (normal, std 0.02), saved once into ``onpolicy.offline.cache_dir()``.

A speed benchmark needs the shapes and the work, not the knowledge: with ``--equal-lengths`` both
sides generate exactly ``max_new_tokens`` tokens, so random weights time the same work as the real
ones (``benchmarks/e2e.py --pair smollm2-shape``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

NAME = "bench-smollm2-shape-v1"
TOKENIZER_DIR = Path(__file__).resolve().parent / "smollm2_tokenizer"
SPECIAL = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
           "unk_token": "<|endoftext|>"}  # fmt: skip
CONFIG = {
    "vocab_size": 49_152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "hidden_act": "silu",
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100_000.0,
    "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
    "initializer_range": 0.02, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}  # fmt: skip


def export_tokenizer(out: Path = TOKENIZER_DIR) -> Path:
    """Write the real SmolLM2 tokenizer's files (compact ``tokenizer.json``, a plain
    ``tokenizer_config.json``, ``chat_template.jinja``) from the GGUF-built model folder."""
    from onpolicy.offline import smollm2_dir

    src = smollm2_dir()
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads((src / "tokenizer.json").read_text())
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    (out / "tokenizer.json").write_text(text + "\n")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **SPECIAL, "model_max_length": 8192}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(src / "chat_template.jinja", out / "chat_template.jinja")
    return out


def llama_config():
    """SmolLM2-135M-Instruct's ``LlamaConfig`` (``CONFIG``)."""
    from transformers import LlamaConfig

    return LlamaConfig(**CONFIG)


def model_dir() -> Path:
    """``cache_dir()/NAME``: the random-weight model + the committed tokenizer (built once)."""
    from onpolicy.offline import cache_dir

    final = cache_dir() / NAME
    if (final / "config.json").exists() and (final / "model.safetensors").exists():
        return final
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config()).float()
    model.generation_config = GenerationConfig(
        bos_token_id=CONFIG["bos_token_id"], eos_token_id=CONFIG["eos_token_id"],
        pad_token_id=CONFIG["pad_token_id"],
    )  # fmt: skip
    from benchmarks.e2e_models import save_into

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        for f in TOKENIZER_DIR.iterdir():
            shutil.copyfile(f, folder / f.name)

    return save_into(final, save)


if __name__ == "__main__":  # re-export the committed tokenizer files
    print(export_tokenizer(), file=sys.stderr)

"""Load a tokenizer and a causal LM from a Hugging Face folder (or a GGUF file in it), with
transformers' loading errors as one ``ConfigError`` line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from onpolicy.errors import ConfigError
from onpolicy.models.folders import check_model_folder, check_tokenizer_folder

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """``"bfloat16"``/``"bf16"``/... or a ``torch.dtype`` -> ``torch.dtype``; ``"auto"`` stays
    ``"auto"`` (the dtype the checkpoint was saved in)."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


@contextlib.contextmanager
def _loading(what: str, path: Path) -> Iterator[None]:
    """transformers' errors while loading ``path`` as one ``ConfigError`` line."""
    try:
        yield
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"cannot load the {what} in {str(path)!r}: {first}") from exc


def load_tokenizer(path: str | Path, gguf_file: str | None = None) -> Any:
    """The tokenizer saved with a model. A tokenizer without a pad token gets its EOS as pad (only
    ever used under an attention mask)."""
    from transformers import AutoTokenizer

    p = check_tokenizer_folder(path, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    with _loading("tokenizer", p):
        tok = AutoTokenizer.from_pretrained(p, **kwargs)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ConfigError(
                f"tokenizer at {str(p)!r} has neither a pad nor an EOS token; add one"
            )
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    path: str | Path,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    gguf_file: str | None = None,
    trainable: bool = True,
) -> Any:
    """A causal LM from a Hugging Face folder (or a GGUF file inside it, ``gguf_file``).

    ``trainable=False`` (teachers) freezes every parameter and sets eval mode.
    """
    from transformers import AutoModelForCausalLM

    p = Path(path)
    check_model_folder(p, gguf_file)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype)}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    with _loading("model", p):
        model = AutoModelForCausalLM.from_pretrained(p, **kwargs)
    model = model.to(device)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model


def output_vocab_size(model: Any) -> int:
    """Rows of the model's output embedding (may exceed the tokenizer's size: padded vocab)."""
    return int(model.get_output_embeddings().weight.shape[0])

"""What identifies a teacher on disk, and loading one by its spec, for the offline teacher commands
(``onpolicy generate``, ``onpolicy score``) and the cached-scores check of a run.

``weights_fingerprint`` hashes the bytes of the files that decide a model's outputs (its config and
weight files), never a path or a time stamp: the same weights copied elsewhere give the same
fingerprint; any changed weight gives another one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
_CONFIG_FILES = ("config.json", "generation_config.json")
_BLOCK = 1 << 22  # 4 MiB read at a time


def weights_fingerprint(folder: str | Path, gguf_file: str | None = None) -> str:
    """sha256 (hex, 16 characters) over the config and weight files of the model in ``folder``
    (``gguf_file``: only that weight file), in name order, each prefixed by its name."""
    root = Path(folder)
    if gguf_file:
        names = [gguf_file]
    else:
        names = sorted(
            p.name for p in root.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
        )
    names = [n for n in _CONFIG_FILES if (root / n).is_file()] + names
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(root / name, "rb") as f:
            while block := f.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The alignment layer's tokenizer fingerprint (what decides how text becomes ids), 16 hex."""
    from alignment.tokens.vocab_map import fingerprint

    return fingerprint(tokenizer)[:16]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_teacher_model(
    spec: str, dtype: str = "float32", gguf_file: str | None = None, device: Any = None
) -> tuple[Any, Any, str]:
    """``(model, tokenizer, folder)`` of the teacher ``spec`` (a folder, ``.gguf`` folder or
    ``tiny:...``), frozen, in eval mode, on ``device`` (default: CUDA when present)."""
    from onpolicy.models import load_model, load_tokenizer, resolve_model_path

    folder = resolve_model_path(spec)
    tokenizer = load_tokenizer(folder, gguf_file)
    model = load_model(
        folder, dtype=dtype, device=device or default_device(), gguf_file=gguf_file,
        trainable=False,
    )  # fmt: skip
    return model, tokenizer, folder

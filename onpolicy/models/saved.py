"""Save a student (LoRA adapters or full weights, with its tokenizer), export a LoRA student
merged, and copy a saved student's weights into a model (``student.init_from``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from onpolicy.errors import ConfigError
from onpolicy.models.lora import is_peft


def save_student(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save in Hugging Face format: a LoRA student saves its adapters only (``adapter_config.json``
    + ``adapter_model.safetensors``), a full student its weights; the tokenizer goes alongside."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def export_merged(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save a LoRA student with its adapters merged into the base weights (a plain model folder
    that loads without PEFT). The training model is left untouched (merged on a copy)."""
    if not is_peft(model):
        return save_student(model, tokenizer, out_dir)
    merged = copy.deepcopy(model).merge_and_unload()
    return save_student(merged, tokenizer, out_dir)


def saved_weights_file(folder: str | Path) -> Path:
    """The ``model.safetensors`` of a saved student: in ``folder`` (a saved student, a trainer
    checkpoint) or in ``folder/final`` (a run folder); a one-line ``ConfigError`` when neither."""
    base = Path(folder).expanduser()
    for candidate in (base / "model.safetensors", base / "final" / "model.safetensors"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"student.init_from={str(folder)!r} holds no model.safetensors (nor final/"
        "model.safetensors); give a run folder, its final/ folder or a checkpoint folder of a "
        "full (non-LoRA) student"
    )


def load_saved_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Copy the weights saved in ``folder`` (see ``saved_weights_file``) into ``model`` in place.

    Every parameter must be in the file with its shape, except tied ones (an output embedding
    that shares the input embedding's storage is saved once)."""
    from safetensors.torch import load_file

    path = saved_weights_file(folder)
    saved = load_file(str(path))
    own = model.state_dict()
    wrong = sorted(k for k, v in saved.items() if k not in own or own[k].shape != v.shape)
    if wrong:
        raise ConfigError(
            f"student.init_from: {path} does not fit the student's architecture (e.g. "
            f"{wrong[0]!r}); init_from must be a run of the same student.path"
        )
    stored = {own[k].data_ptr() for k in saved}
    missing = [k for k in own if k not in saved and own[k].data_ptr() not in stored]
    if missing:
        raise ConfigError(f"student.init_from: {path} lacks {missing[0]!r}; save the full model")
    model.load_state_dict(saved, strict=False)

"""Checks of a model or tokenizer folder before anything loads (files present, JSON readable,
``max_length`` within the model's positions): one-line ``ConfigError``s naming what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onpolicy.errors import ConfigError
from onpolicy.models.paths import resolve_model_path


def existing_path(path: str | Path, what: str) -> Path:
    """``Path(path)``, or a one-line ``ConfigError`` naming ``what`` when it does not exist."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"{what} path {str(p)!r} does not exist; give a Hugging Face model folder "
            "(config.json + weights) saved with save_pretrained"
        )
    return p


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "*.pt")


def _read_json(path: Path, what: str) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{what} {str(path)!r} is damaged ({first}); copy it again from the model's source"
        ) from exc


def check_tokenizer_folder(path: str | Path, gguf_file: str | None = None) -> Path:
    """Check before loading that ``path`` holds a readable tokenizer (its files, valid JSON);
    ``ConfigError`` naming what is missing or damaged."""
    p = existing_path(path, "tokenizer")
    if gguf_file:
        return p
    if not p.is_dir():
        raise ConfigError(f"tokenizer path {str(p)!r} is a file; give the model's folder")
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(
            f"{str(p)!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save it with "
            "tokenizer.save_pretrained(folder) or copy the tokenizer files in"
        )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (p / name).is_file():
            _read_json(p / name, name)
    return p


def check_model_folder(path: str | Path, gguf_file: str | None = None) -> dict[str, Any]:
    """Check before loading that ``path`` is a causal-LM folder (``config.json`` with a
    ``model_type``, weight files) and return its config; ``ConfigError`` naming what is
    missing."""
    p = existing_path(path, "model")
    if gguf_file:
        return {}
    if not p.is_dir():
        raise ConfigError(f"model path {str(p)!r} is a file; give the model's folder")
    if not (p / "config.json").is_file():
        raise ConfigError(
            f"{str(p)!r} is not a model folder: no config.json; save it with "
            "model.save_pretrained(folder)"
        )
    cfg = _read_json(p / "config.json", "config.json")
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ConfigError(f"{str(p / 'config.json')!r} has no model_type: not a transformers model")
    if not any(any(p.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ConfigError(
            f"{str(p)!r} has no weights (model.safetensors or pytorch_model.bin); the download "
            "or save did not finish"
        )
    return cfg


def max_positions(config_json: dict[str, Any]) -> int | None:
    """The positions a model supports (``max_position_embeddings`` or ``n_positions``, also
    inside ``text_config``), or None when its config does not say."""
    for cfg in (config_json, config_json.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            if isinstance(cfg.get(key), int):
                return int(cfg[key])
    return None


def check_run_models(config: Any) -> None:
    """Before anything loads (``config``: an ``onpolicy.config.Config``): the student's and
    teacher's folders hold what loading needs, and ``student.max_length`` fits the student's
    positions (``ConfigError`` otherwise)."""
    student = resolve_model_path(config.student.path)
    check_tokenizer_folder(student, config.student.gguf_file)
    positions = max_positions(check_model_folder(student, config.student.gguf_file))
    if positions is not None and config.student.max_length > positions:
        raise ConfigError(
            f"student.max_length={config.student.max_length} exceeds the {positions} positions "
            f"of the student {config.student.path!r}; set student.max_length <= {positions}"
        )
    for t in [config.teacher, *config.teachers.values()]:
        if t.path and t.mode != "self":
            teacher = resolve_model_path(t.path)
            check_tokenizer_folder(teacher, t.gguf_file)
            if t.backend != "vllm-server":  # a served teacher: only its tokenizer is read here
                check_model_folder(teacher, t.gguf_file)

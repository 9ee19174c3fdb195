"""Model paths: a folder, a ``.gguf`` file, ``tiny:<size>[,key=value...]`` (``onpolicy.tiny``, built
and cached on first use) or ``offline:<name>`` (``onpolicy.offline``: real models, no hub) --
checked before anything loads (``check_model_path``) and resolved to folders
(``resolve_model_path``). The one place these specs are read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onpolicy.errors import ConfigError

TINY_OPTIONS: dict[str, type] = {"tokenizer": str, "seed": int, "pretrain_steps": int,
                                 "pad_vocab_to": int}  # fmt: skip
OFFLINE_MODELS = ("smollm2", "gemma3")  # ``onpolicy.offline.<name>_dir``: real models, no hub


def parse_tiny_spec(spec: str) -> dict[str, Any]:
    """``tiny:small,seed=1,pretrain_steps=300`` -> kwargs of ``onpolicy.tiny.tiny_model_dir``."""
    from onpolicy import tiny

    name, *opts = [s.strip() for s in spec.removeprefix("tiny:").split(",")]
    if name not in tiny.SIZES:
        raise ConfigError(
            f"tiny model {name!r} in {spec!r} is unknown; use one of {sorted(tiny.SIZES)}"
        )
    kwargs: dict[str, Any] = {"name": name}
    for opt in opts:
        k, sep, v = opt.partition("=")
        if not sep or k not in TINY_OPTIONS:
            raise ConfigError(
                f"bad option {opt!r} in {spec!r}; use key=value with keys {sorted(TINY_OPTIONS)}"
            )
        try:
            kwargs[k] = TINY_OPTIONS[k](v)
        except ValueError as exc:
            raise ConfigError(
                f"option {opt!r} in {spec!r} must be {TINY_OPTIONS[k].__name__}"
            ) from exc
    if kwargs.get("tokenizer", "bpe") not in ("bpe", "char"):
        raise ConfigError(f"tokenizer in {spec!r} must be bpe or char")
    return kwargs


def check_model_path(key: str, value: str) -> None:
    """A one-line ``ConfigError`` naming ``key`` unless ``value`` is a model path (see the section
    title) that exists or can be built; nothing is built or loaded."""
    if value.startswith("tiny:"):
        parse_tiny_spec(value)
    elif value.startswith("offline:"):
        if value.removeprefix("offline:") not in OFFLINE_MODELS:
            raise ConfigError(
                f"{key}={value!r} is not an offline model; use offline:smollm2 or offline:gemma3"
            )
    elif not Path(value).expanduser().exists():
        raise ConfigError(
            f"{key}={value!r} does not exist; give a local Hugging Face folder, a .gguf file, "
            "tiny:<size> or offline:<name> (no model hub is used)"
        )


def resolve_model_path(spec: str) -> str:
    """A local folder (or file) for ``spec``: ``tiny:`` models are built and cached on first use,
    ``offline:`` models materialized from their packages (``onpolicy.offline``)."""
    if spec.startswith("tiny:"):
        from onpolicy.tiny import tiny_model_dir

        return str(tiny_model_dir(**parse_tiny_spec(spec)))
    if spec.startswith("offline:"):
        from onpolicy import offline

        check_model_path("model path", spec)
        return str(getattr(offline, spec.removeprefix("offline:") + "_dir")())
    return str(Path(spec).expanduser())

"""Load students and teachers (Hugging Face folders), LoRA students through PEFT, save and export;
the one place model paths (folders, ``.gguf`` files, ``tiny:`` and ``offline:`` specs) are checked
(``check_model_path``, before anything loads) and resolved to folders (``resolve_model_path``).

A teacher can be the student's own base model with its adapters disabled (self-distillation):
``with adapters_disabled(student): teacher_logits = student(...)`` — see ``LocalTeacher``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from onpolicy.errors import ConfigError

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


def _check_path(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"{what} path {str(p)!r} does not exist; give a Hugging Face model folder "
            "(config.json + weights) saved with save_pretrained"
        )
    return p


# ----- model paths: a folder, a .gguf file, ``tiny:<size>[,key=value...]`` or ``offline:<name>``

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
    p = _check_path(path, "tokenizer")
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
    p = _check_path(path, "model")
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


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA student: adapters of rank ``rank`` on the named linear modules (leaf names such as
    ``q_proj``, or ``"all-linear"``), scaled by ``alpha / rank``, with dropout ``dropout``."""

    rank: int = 16
    alpha: float = 32.0
    target_modules: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "o_proj")
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ConfigError(f"lora rank must be a positive integer, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora dropout must be in [0, 1), got {self.dropout}")


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Sorted leaf names of the model's ``nn.Linear`` modules (what LoRA targets can name)."""
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name
        }
    )


def apply_lora(model: torch.nn.Module, spec: LoraSpec) -> Any:
    """Wrap ``model`` in a PEFT ``PeftModel`` with fresh LoRA adapters (only they train).

    Raises ``ConfigError`` naming the available modules when a target does not exist.
    """
    from peft import LoraConfig, get_peft_model

    targets: Sequence[str] | str = spec.target_modules
    if targets != "all-linear":
        targets = [targets] if isinstance(targets, str) else list(targets)
        available = linear_module_names(model)
        missing = [t for t in targets if t not in available]
        if missing:
            raise ConfigError(
                f"LoRA target modules {missing} do not exist in this model; "
                f"use some of {available} or 'all-linear'"
            )
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, config)


def is_peft(model: Any) -> bool:
    """True for a PEFT-wrapped model."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


@contextlib.contextmanager
def adapters_disabled(model: Any) -> Iterator[Any]:
    """Inside the block, ``model`` computes with its base weights only (its adapters off); a model
    without adapters is yielded unchanged. Used for self-distillation teachers."""
    if is_peft(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def load_lora_student(base_path: str | Path, adapter_dir: str | Path, **load_kwargs: Any) -> Any:
    """Base model + saved adapters (trainable), e.g. to resume a LoRA run."""
    from peft import PeftModel

    base = load_model(base_path, **load_kwargs)
    return PeftModel.from_pretrained(base, _check_path(adapter_dir, "adapter"), is_trainable=True)


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


def output_vocab_size(model: Any) -> int:
    """Rows of the model's output embedding (may exceed the tokenizer's size: padded vocab)."""
    return int(model.get_output_embeddings().weight.shape[0])


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

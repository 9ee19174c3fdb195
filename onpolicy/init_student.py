"""A smaller student cut from the teacher: a subset of its decoder layers (DistilBERT-style init).

    onpolicy init-student --teacher PATH --layers 0,2,4 --out DIR
    onpolicy init-student --teacher PATH --every 3 --out DIR      # layers 0, 3, 6, ...

The student has the teacher's architecture with ``len(layers)`` decoder layers: student layer ``i``
is a copy of teacher layer ``layers[i]``; the embeddings, the final norm and the LM head are copied
(a tied head stays tied). The config's ``num_hidden_layers`` is set to the new depth and every
per-layer list in it (a list as long as the teacher's stack, e.g. ``layer_types`` of Gemma-3 or
Qwen-3) keeps the kept layers' entries. The student is built from that config (so each attention
module has its new ``layer_idx`` for the KV cache) and loaded with the teacher's renamed weights
(strict: every weight accounted for). The output folder (weights, config, generation config,
tokenizer, ``init_student.json`` recording where it came from) loads with
``AutoModelForCausalLM.from_pretrained`` and trains like any student (full or LoRA).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from onpolicy.errors import ConfigError, OnpolicyError

RECORD = "init_student.json"


@dataclass(frozen=True)
class StudentInit:
    """What ``init_student`` wrote.

    Attributes:
        out_dir: the student folder.
        teacher: the teacher folder it was cut from.
        layers: teacher layer index of each student layer (student layer ``i`` <- ``layers[i]``).
        teacher_layers: depth of the teacher.
        teacher_params, student_params: parameter counts (tied weights counted once).
        tied: whether the LM head shares the input embedding's weight.
    """

    out_dir: str
    teacher: str
    layers: list[int]
    teacher_layers: int
    teacher_params: int
    student_params: int
    tied: bool


def parse_layers(spec: str) -> list[int]:
    """``"0,2,4"`` -> ``[0, 2, 4]`` (a ``ConfigError`` naming the bad entry otherwise)."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        try:
            out.append(int(part))
        except ValueError:
            raise ConfigError(
                f"--layers {spec!r}: {part!r} is not an integer; give layer indices like 0,2,4"
            ) from None
    return out


def every_k(num_layers: int, k: int) -> list[int]:
    """Layers ``0, k, 2k, ...`` below ``num_layers`` (``--every k``)."""
    if k < 1:
        raise ConfigError(f"--every {k} must be a positive integer (1 keeps every layer)")
    return list(range(0, num_layers, k))


def check_layers(layers: Sequence[int], num_layers: int) -> None:
    """Kept layers must be non-empty, strictly increasing and inside ``[0, num_layers)``."""
    if not layers:
        raise ConfigError("no layers to keep; give --layers 0,2,... or --every K")
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(
            f"layers {bad} are outside the teacher's {num_layers} layers (0..{num_layers - 1})"
        )
    if any(b <= a for a, b in itertools.pairwise(layers)):
        raise ConfigError(
            f"layers {list(layers)} must be strictly increasing (each teacher layer kept once, "
            "in order)"
        )


def student_config(teacher_config: Any, layers: Sequence[int]) -> Any:
    """A copy of ``teacher_config`` with ``len(layers)`` layers; per-layer lists (length equal to
    the teacher's depth, e.g. ``layer_types``) keep the kept layers' entries."""
    n = int(teacher_config.num_hidden_layers)
    config = copy.deepcopy(teacher_config)
    for key, value in teacher_config.to_dict().items():
        if isinstance(value, list | tuple) and len(value) == n and hasattr(config, key):
            setattr(config, key, type(value)(value[i] for i in layers))
    config.num_hidden_layers = len(layers)
    return config


def layer_stack_name(model: Any, num_layers: int) -> str:
    """Dotted name of the model's decoder-layer ``ModuleList`` (e.g. ``model.layers``)."""
    import torch

    found = [
        name
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) == num_layers and name
    ]
    if len(found) != 1:
        raise ConfigError(
            f"cannot find the decoder layer stack ({num_layers} layers) in "
            f"{type(model).__name__}: candidates {found}; init-student supports decoder-only LMs "
            "with one stack of layers"
        )
    return found[0]


def remap_state_dict(state: dict[str, Any], stack: str, layers: Sequence[int]) -> dict[str, Any]:
    """The teacher's weights renamed for the student: ``{stack}.{layers[i]}.*`` ->
    ``{stack}.{i}.*``; weights of dropped layers are left out, every other weight is kept."""
    new_index = {j: i for i, j in enumerate(layers)}
    prefix = stack + "."
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            out[key] = value
            continue
        index, rest = key[len(prefix) :].split(".", 1)
        if int(index) in new_index:
            out[f"{prefix}{new_index[int(index)]}.{rest}"] = value
    return out


def num_params(model: Any) -> int:
    """Parameters, each shared tensor counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def is_tied(model: Any) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def cut_student(teacher: Any, layers: Sequence[int]) -> Any:
    """A new model with the teacher's architecture and the kept layers' weights (see module doc).

    ``teacher``: a loaded transformers causal LM; it is not modified.
    """
    from transformers import AutoModelForCausalLM

    n = int(teacher.config.num_hidden_layers)
    check_layers(layers, n)
    stack = layer_stack_name(teacher, n)
    config = student_config(teacher.config, layers)
    student = AutoModelForCausalLM.from_config(config, dtype=teacher.dtype)
    state = remap_state_dict(teacher.state_dict(), stack, layers)
    student.load_state_dict(state, strict=True)
    if is_tied(teacher) and not is_tied(student):
        raise ConfigError(
            "the teacher's LM head is tied to its embeddings but the student's is not"
        )
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.eval()


def init_student(
    teacher_path: str | Path,
    out_dir: str | Path,
    layers: Sequence[int] | None = None,
    every: int | None = None,
) -> StudentInit:
    """Cut a student from the teacher at ``teacher_path`` and save it (with the teacher's
    tokenizer) to ``out_dir``. ``teacher_path``: a Hugging Face folder or a ``tiny:``/``offline:``
    spec as in configs. Exactly one of ``layers`` / ``every`` is given. Everything is
    validated from the teacher's config before its weights load; ``out_dir`` must be new or empty.
    """
    from transformers import AutoConfig

    from onpolicy.models import load_model, load_tokenizer, resolve_model_path

    if (layers is None) == (every is None):
        raise ConfigError("give exactly one of --layers 0,2,... and --every K")
    out = Path(out_dir)
    teacher_path = Path(resolve_model_path(str(teacher_path)))  # tiny:/offline: specs as in configs
    if not (teacher_path / "config.json").is_file():
        raise ConfigError(f"--teacher {teacher_path} is not a Hugging Face model folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} exists and is not empty; choose a new folder")
    n = int(AutoConfig.from_pretrained(teacher_path).num_hidden_layers)
    kept = list(layers) if layers is not None else every_k(n, int(every))
    check_layers(kept, n)
    teacher = load_model(teacher_path, dtype="auto", trainable=False)
    student = cut_student(teacher, kept)
    out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out)
    load_tokenizer(teacher_path).save_pretrained(out)
    result = StudentInit(
        str(out), str(teacher_path), kept, n, num_params(teacher), num_params(student),
        is_tied(student),
    )  # fmt: skip
    (out / RECORD).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``onpolicy init-student``: returns the exit status (2 on a bad input, nothing written)."""
    parser = argparse.ArgumentParser(
        prog="onpolicy init-student", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--teacher", required=True, help="teacher model folder (Hugging Face) or tiny:<size>,..."
    )
    parser.add_argument("--out", required=True, help="new folder for the student")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--layers", help="teacher layers to keep, in order, e.g. 0,2,4")
    which.add_argument("--every", type=int, help="keep layers 0, K, 2K, ...")
    args = parser.parse_args(argv)
    try:
        layers = parse_layers(args.layers) if args.layers is not None else None
        result = init_student(args.teacher, args.out, layers=layers, every=args.every)
    except OnpolicyError as exc:
        print(f"onpolicy init-student: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

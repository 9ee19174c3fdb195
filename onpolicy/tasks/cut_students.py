"""Students cut from a task's teacher (``onpolicy.init_student``), cached next to it: the compare
harness's ``models: {kind: arithmetic, cut_layers: [0, 2]}``, and the same shape freshly
initialized (``cut_fresh: true``), the control at equal FLOPs (same architecture, same size).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

FRESH_RECORD = "fresh_init.json"


def cut_student_dir(
    teacher_dir: Path,
    layers: Sequence[int],
    fresh: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """The folder of the student cut from ``teacher_dir``'s decoder ``layers`` (built once, next
    to the teacher); ``fresh``: the same architecture with new random weights (``seed``)."""
    from onpolicy.init_student import init_student

    tag = "_".join(str(int(i)) for i in layers)
    out = teacher_dir.parent / f"cut-{teacher_dir.name}-l{tag}{'-fresh' if fresh else ''}"
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    made = init_student(teacher_dir, tmp, layers=list(layers))
    if fresh:
        _reinitialize(tmp, seed)
    os.replace(tmp, out)  # atomic: a concurrent builder's complete folder is as good
    what = "fresh (re-initialized)" if fresh else "cut"
    log(f"[compare] {what} student from teacher layers {made.layers}: {out}")
    return out


def _reinitialize(folder: Path, seed: int) -> None:
    """Replace the weights saved in ``folder`` by a fresh initialization of its config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    (folder / FRESH_RECORD).write_text(json.dumps({"seed": seed}))

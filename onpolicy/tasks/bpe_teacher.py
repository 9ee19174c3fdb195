"""The arithmetic teacher rebuilt with the BPE student's tokenizer: the same-tokenizer reference
of the cross-tokenizer pair (issue 11, item 8).

The cross pair is a char-level teacher and a BPE student. Its like-for-like same-tokenizer
reference keeps the student, the warm start and the schedule and swaps the teacher for one of
equal quality that speaks the student's tokenizer: the teacher's architecture and recipe
(``ArithmeticModelsConfig.teacher`` / ``teacher_steps``) trained on the same gold scratchpads with
the BPE tokenizer saved in the cross student's folder. Cached beside the other arithmetic models.
Compare configs ask for it with ``models: {kind: arithmetic, teacher_tokenizer: bpe}``: the teacher
is this model and the (same-tokenizer) student is the BPE student.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from onpolicy.tasks.arith_models import ArithmeticModelsConfig, train_and_save

TEACHER_TOKENIZERS = ("char", "bpe")


def _key(cfg: ArithmeticModelsConfig, cross_student_dir: Path) -> str:
    fields = asdict(cfg)
    for key in ("student", "student_steps", "cross_student_steps"):
        fields.pop(key)
    blob = json.dumps(
        {"name": "bpe_teacher", "tok": cross_student_dir.name, **fields},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def bpe_teacher_dir(cfg: ArithmeticModelsConfig, cross_student_dir: Path, log=print) -> Path:
    """The folder of the BPE teacher for ``cfg`` (trained and saved on first use, minutes on a
    CPU); its tokenizer is the one saved in ``cross_student_dir``."""
    folder = cross_student_dir.parent / f"bpe_teacher-{_key(cfg, cross_student_dir)}"
    if not (folder / "build.json").exists():
        _build(cfg, cross_student_dir, folder, log)
    return folder


def _build(cfg: ArithmeticModelsConfig, cross_student_dir: Path, folder: Path, log) -> None:
    from transformers import AutoTokenizer

    from onpolicy.tasks.arithmetic import arithmetic_task

    task = arithmetic_task(digits=cfg.digits, num_train=cfg.num_train, seed=cfg.data_seed)
    tok = AutoTokenizer.from_pretrained(cross_student_dir)
    train_and_save(cfg, task, tok, cfg.teacher, cfg.teacher_steps, "the BPE teacher", folder, log,
                   {"tokenizer_from": str(cross_student_dir)})  # fmt: skip


def held_out_score(folder: Path) -> float:
    """The held-out exact match recorded when the model in ``folder`` was built."""
    return float(json.loads((Path(folder) / "build.json").read_text())["held_out_exact_match"])

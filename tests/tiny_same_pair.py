"""Shared by the same-tokenizer tests: the tiny BPE student (untrained, seed 0) and the small BPE
teacher pretrained for 300 steps (seed 1), on one tokenizer.

Imported as a plain module (``tests/`` is on ``sys.path`` through the root ``conftest.py``)."""

from __future__ import annotations

from typing import NamedTuple

from onpolicy.models import load_model, load_tokenizer
from onpolicy.tiny import tiny_model_dir


class SamePair(NamedTuple):
    student: object
    tokenizer: object  # the student's
    teacher: object  # frozen (trainable=False)
    teacher_tokenizer: object


def same_tokenizer_pair() -> SamePair:
    """Load (building and caching on first use) the student and the teacher."""
    spath = tiny_model_dir("tiny", "bpe", seed=0)
    tpath = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    return SamePair(
        load_model(spath),
        load_tokenizer(spath),
        load_model(tpath, trainable=False),
        load_tokenizer(tpath),
    )

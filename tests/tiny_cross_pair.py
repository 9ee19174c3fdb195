"""Shared by the cross-tokenizer tests: two tiny real models with different tokenizers (byte-level
BPE student, char teacher with byte fallback) and one scored student rollout on four questions.

Imported as a plain module (``tests/`` is on ``sys.path`` through the root ``conftest.py``)."""

from __future__ import annotations

from typing import NamedTuple

from onpolicy.chat import render_prompts
from onpolicy.models import load_model, load_tokenizer
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt, SamplingParams

QUESTIONS = ["What is 3 plus 4?", "Spell naïve.", "Repeat: 日本", "Count to 4."]


class CrossPair(NamedTuple):
    student: object
    student_tokenizer: object
    teacher: object
    teacher_tokenizer: object
    rollout: object
    scorer: object  # the LocalTeacher
    scores: object


def scored_cross_pair(seed: int = 1, mode: str = "auto", max_new_tokens: int = 24) -> CrossPair:
    """Load the tiny BPE student and char teacher, sample one completion per question at
    temperature 0.7 with ``seed`` and score it with ``LocalTeacher(mode=mode)``."""
    spath = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    tpath = tiny_model_dir("small", "char", seed=2, pretrain_steps=300)
    student, stok = load_model(spath), load_tokenizer(spath)
    teacher, ttok = load_model(tpath, trainable=False), load_tokenizer(tpath)
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS]
    params = SamplingParams(max_new_tokens, temperature=0.7, seed=seed)
    ro = HFRolloutBackend(student, stok).generate(render_prompts(stok, prompts), params, prompts)
    scorer = LocalTeacher(teacher, ttok, stok, mode=mode)
    return CrossPair(student, stok, teacher, ttok, ro, scorer, scorer.score(ro))


def self_scored_rollout(model, tokenizer):
    """``(rollout, scores)``: ``model`` samples two questions (seed 0) and scores itself
    through the cross-tokenizer path (``mode="cross"``, the same tokenizer on both sides), so
    any cross objective on a copy of ``model`` must give 0."""
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS[:2]]
    ro = HFRolloutBackend(model, tokenizer).generate(
        render_prompts(tokenizer, prompts), SamplingParams(16, seed=0), prompts
    )
    return ro, LocalTeacher(model, tokenizer, tokenizer, mode="cross").score(ro)

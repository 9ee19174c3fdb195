"""Shared fixtures for the alignment tests: the four real tokenizer families, loaded once."""

from __future__ import annotations

import pytest

REAL = ("gpt2", "qwen", "smollm2", "gemma3")


@pytest.fixture(scope="session")
def real_tokenizers() -> dict:
    """name -> Hugging Face fast tokenizer, converted from packages by ``onpolicy.offline``.

    (Tests may use ``onpolicy.offline`` to get the files; the ``alignment`` package never does.)"""
    from transformers import AutoTokenizer

    from onpolicy import offline

    return {name: AutoTokenizer.from_pretrained(offline.ALL[name]()) for name in REAL}

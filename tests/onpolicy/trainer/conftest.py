"""Trainer tests' session fixture: the tiny models built once, outside any timed test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _tiny_models_built():
    """Build (or find cached) the tiny models once per session, outside any timed test."""
    from onpolicy.tiny import tiny_model_dir

    tiny_model_dir("tiny")
    tiny_model_dir("small", seed=1, pretrain_steps=300)
    tiny_model_dir("tiny", seed=2, pretrain_steps=100)

"""Every committed comparison config parses and validates (keys, methods, budget, lr grid, seeds)
as ``onpolicy compare`` would before any model loads: a config that a report names as its command
must not fail on its first line for a reader who re-runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from onpolicy.compare.config import load_config

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "configs" / "compare").glob("*.yaml"))


def test_there_are_configs_to_check():
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_compare_config_validates(path):
    cfg = load_config(path)
    assert cfg.seeds and cfg.methods
    assert cfg.output_dir

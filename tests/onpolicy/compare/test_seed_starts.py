"""``models.init_from``: per-seed students warmed outside the harness (compare/warm.py
``seed_starts``), checked when the config is read, before any model loads."""

from __future__ import annotations

import json

import pytest

from onpolicy.compare.config import parse_config
from onpolicy.compare.warm import seed_starts
from onpolicy.errors import ConfigError


def _saved(folder, step=None):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if step is not None:
        (folder / "build.json").write_text(json.dumps({"step": step}))
    return folder


def test_one_folder_per_seed_with_its_step(tmp_path):
    _saved(tmp_path / "seed-0", step=4600)
    _saved(tmp_path / "seed-1")
    starts = seed_starts({"kind": "paths", "init_from": str(tmp_path / "seed-{seed}")}, [0, 1])
    assert starts[0].init_from == str((tmp_path / "seed-0").resolve()) and starts[0].step == 4600
    assert starts[1].step == 0 and {s.name for s in starts.values()} == {"warm"}
    assert starts[0].flops.paid == 0.0 and starts[0].flops.free == 0.0


def test_absent_key_is_none():
    assert seed_starts({"kind": "paths"}, [0]) is None


def test_missing_seed_folder_is_a_one_line_error(tmp_path):
    _saved(tmp_path / "seed-0")
    with pytest.raises(ConfigError, match=r"seed 1: .*seed-1 holds no saved model") as err:
        seed_starts({"kind": "paths", "init_from": str(tmp_path / "seed-{seed}")}, [0, 1])
    assert "\n" not in str(err.value)


def test_only_with_paths(tmp_path):
    with pytest.raises(ConfigError, match=r"needs models\.kind: paths"):
        seed_starts({"kind": "arithmetic", "init_from": str(tmp_path)}, [0])


def _raw(tmp_path, **extra):
    return {
        "task": {"name": "arithmetic"},
        "models": {"kind": "paths", "teacher": str(tmp_path), "student": str(tmp_path),
                   "init_from": str(tmp_path / "seed-{seed}")},
        "methods": ["sft"],
        "seeds": [0, 1],
        **extra,
    }  # fmt: skip


def test_config_checks_every_seed_before_loading(tmp_path):
    _saved(tmp_path / "seed-0")
    with pytest.raises(ConfigError, match="seed 1"):
        parse_config(_raw(tmp_path))
    _saved(tmp_path / "seed-1")
    assert parse_config(_raw(tmp_path)).models["init_from"].endswith("seed-{seed}")


def test_config_refuses_two_warm_starts(tmp_path):
    _saved(tmp_path / "seed-0")
    _saved(tmp_path / "seed-1")
    raw = _raw(tmp_path, warm_start={"method": "sft", "steps": 10})
    with pytest.raises(ConfigError, match="init_from and warm_start both"):
        parse_config(raw)

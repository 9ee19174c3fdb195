"""Every committed compare config parses (a config the harness refuses is caught here, not at the
start of an hour-long run; a config whose per-seed warm students, ``models.init_from``, are not on
this machine must fail with the harness's one-line "warm the student first" error), and the
capacity cell's config (docs/results/evidence-long-capacity.md) keeps the settings its report
states: the 1.77M teacher, per-seed warm students, equal FLOPs with the teacher's data paid, LR
chosen on the validation split."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from onpolicy.compare.config import parse_config
from onpolicy.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "configs/compare").glob("*.yaml"))


def test_there_are_configs_to_check():
    assert len(CONFIGS) >= 30


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_committed_config_parses(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO)  # the configs name their folders relative to the repository root
    raw = yaml.safe_load(path.read_text())
    warm = raw["models"].get("init_from")
    seeds = raw.get("seeds", [0])
    if warm and not all((REPO / warm.format(seed=s) / "config.json").exists() for s in seeds):
        missing = r"^models\.init_from for seed .* holds no saved model"
        with pytest.raises(ConfigError, match=missing):
            parse_config(raw)
        return
    cfg = parse_config(raw)
    assert cfg.methods and cfg.seeds


def test_capacity_config_keeps_the_stated_cell():
    raw = yaml.safe_load((REPO / "configs/compare/evidence_long_capacity.yaml").read_text())
    models = raw["models"]
    cfg = parse_config({**raw, "models": {k: v for k, v in models.items() if k != "init_from"}})
    assert models["teacher"] == ".cache/onpolicy/long_arithmetic/gpu/long-large/step-2750"
    assert models["init_from"].endswith("/seed-{seed}/plateau")
    assert "/cpu-warm/capacity-" in models["init_from"]
    assert models["student"] == models["init_from"].format(seed=0)
    assert [m.name for m in cfg.methods] == ["untouched", "sft", "reverse_kl", "gkd"]
    assert raw["budget"] == {"match": "flops", "reference": "reverse_kl", "teacher_data": "paid"}
    assert raw["validation"] == {"size": 200}  # what warm_students.py --validation held out
    assert list(cfg.seeds) == [0, 1, 2] and raw["reuse_runs"] is True

"""The long_arithmetic model builder on tiny sizes: builds, caches, reloads, reports sizes."""

from __future__ import annotations

import json

from onpolicy.models import load_model, load_tokenizer
from onpolicy.tasks.arith_models import ModelSpec
from onpolicy.tasks.long_models import LongModelsConfig, long_models, max_new_tokens


def test_tiny_build_is_cached_and_loadable(tmp_path):
    cfg = LongModelsConfig(
        digits=3,
        min_digits=2,
        num_train=64,
        teacher=ModelSpec(layers=1, heads=2, ffn=64),
        teacher_steps=2,
        batch_size=8,
        students=(("s", ModelSpec(layers=1, heads=1, ffn=32)),),
    )
    logs: list[str] = []
    first = long_models(cfg, root=tmp_path, log=logs.append)
    assert len(logs) == 1 and "teacher trained 2 steps" in logs[0]
    again = long_models(cfg, root=tmp_path, log=logs.append)
    assert len(logs) == 1 and again == first  # the second call trains nothing
    record = json.loads((first.teacher_dir / "build.json").read_text())
    assert 0.0 <= record["valid_exact_match"] <= 1.0
    teacher = load_model(first.teacher_dir, trainable=False)
    student = load_model(first.student_dirs["s"], trainable=False)
    assert first.params["teacher"] == sum(p.numel() for p in teacher.parameters())
    assert first.params["s"] == sum(p.numel() for p in student.parameters())
    assert first.params["teacher"] > 3 * first.params["s"]
    tok = load_tokenizer(first.student_dirs["s"])
    assert tok.get_vocab() == load_tokenizer(first.teacher_dir).get_vocab()
    assert max_new_tokens(8) == 82 + 5
    other = long_models(
        LongModelsConfig(**{**cfg.__dict__, "variants": 1}), root=tmp_path, log=logs.append
    )
    assert other.teacher_dir != first.teacher_dir and other.student_dirs == first.student_dirs


def test_named_teachers_keep_the_base_cache_key_and_give_the_size_ratios():
    from dataclasses import asdict

    import pytest

    from onpolicy.errors import ConfigError
    from onpolicy.tasks.arith_models import char_tokenizer
    from onpolicy.tasks.long_models import TEACHERS, teacher_spec

    # the default teacher is the shape every cached base model was built from (same key)
    assert asdict(LongModelsConfig().teacher) == {"layers": 3, "heads": 3, "ffn": 384}
    assert teacher_spec("base") == LongModelsConfig().teacher
    assert set(TEACHERS) == {"base", "large"}
    with pytest.raises(ConfigError, match="teacher='huge'; use one of"):
        teacher_spec("huge")
    tok = char_tokenizer()
    count = {
        name: sum(p.numel() for p in spec.build(tok, seed=0).parameters())
        for name, spec in (*TEACHERS.items(), *LongModelsConfig().students)
    }
    assert 5 < count["base"] / count["medium"] < 6
    assert count["large"] / count["medium"] >= 20  # issue 11's capacity gap


def test_the_ratio_config_reaches_the_large_teacher_and_checks_the_name_up_front():
    from pathlib import Path

    import pytest
    import yaml

    from onpolicy.compare.config import parse_config
    from onpolicy.errors import ConfigError

    path = Path(__file__).resolve().parents[3] / "configs/compare/evidence_ratio.yaml"
    raw = yaml.safe_load(path.read_text())
    cfg = parse_config(raw)
    assert cfg.models["teacher"] == "large" and cfg.models["student"] == "medium"
    with pytest.raises(ConfigError, match=r"^models\.teacher='xl'; use one of \['base', 'large'\]"):
        parse_config({**raw, "models": {**raw["models"], "teacher": "xl"}})

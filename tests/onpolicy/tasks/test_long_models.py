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

"""The arithmetic task's model cache: built once, reused, a student recipe change keeps the
teacher; the saved folders load as ordinary Hugging Face models."""

from __future__ import annotations

from onpolicy.tasks.arith_models import ArithmeticModelsConfig, ModelSpec, arithmetic_models

TINY = {
    "digits": 2,
    "num_train": 64,
    "batch_size": 8,
    "teacher_steps": 3,
    "student_steps": 2,
    "cross_student_steps": 2,
    "teacher": ModelSpec(1, 1, 32),
    "student": ModelSpec(1, 1, 16),
}


def test_cache_builds_once_and_keys_per_model(tmp_path):
    logs: list[str] = []
    cfg = ArithmeticModelsConfig(**TINY)
    first = arithmetic_models(cfg, root=tmp_path, log=logs.append, which=("teacher", "student"))
    assert len(logs) == 2 and set(first.scores) == {"teacher", "student"}
    assert not first.cross_student_dir.exists()  # not asked for: not built
    again = arithmetic_models(cfg, root=tmp_path, log=logs.append, which=("teacher", "student"))
    assert len(logs) == 2 and again == first  # reused, nothing retrained
    other = ArithmeticModelsConfig(**{**TINY, "student_steps": 3})
    changed = arithmetic_models(other, root=tmp_path, log=logs.append, which=("teacher", "student"))
    assert len(logs) == 3 and "student" in logs[-1]  # only the student was rebuilt
    assert changed.teacher_dir == first.teacher_dir
    assert changed.student_dir != first.student_dir


def test_saved_models_load(tmp_path):
    from onpolicy.models import load_model, load_tokenizer

    m = arithmetic_models(
        ArithmeticModelsConfig(**TINY),
        root=tmp_path,
        log=lambda s: None,
        which=("teacher", "cross_student"),
    )
    for folder in (m.teacher_dir, m.cross_student_dir):
        model, tok = load_model(folder), load_tokenizer(folder)
        assert model.config.head_dim == 32 and model.config.vocab_size == len(tok)
        assert tok.decode(tok("12+34=")["input_ids"]) == "12+34="

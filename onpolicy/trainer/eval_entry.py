"""``evaluate_config(config)``: a student evaluated against the config's teacher on held-out
prompts, without training (``onpolicy eval``); nothing is written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onpolicy.config import Config
from onpolicy.trainer.evaluate import evaluate, task_metric
from onpolicy.types import Prompt, ScoreFn


def evaluate_config(
    config: Config,
    *,
    eval_prompts: Sequence[Prompt] | None = None,
    score_fn: ScoreFn | None = None,
    student_path: str | None = None,
    base_dir: Path | None = None,
) -> dict[str, float]:
    """Evaluate a student against the config's teacher on held-out prompts; nothing is written.

    ``student_path``: a saved student (e.g. a run's ``final`` folder; a LoRA adapter folder is
    loaded on top of ``student.path``); default: the config's ``student.path`` as is.
    """
    from accelerate import Accelerator

    from onpolicy.config_checks import validate
    from onpolicy.models import load_lora_student, load_model, load_tokenizer, resolve_model_path
    from onpolicy.teacher.backends import build_teacher

    validate(config, base_dir)
    device = Accelerator().device
    path = student_path or resolve_model_path(config.student.path)
    if (Path(path) / "adapter_config.json").is_file():
        base = resolve_model_path(config.student.path)
        model, tok = load_lora_student(base, path, device=device), load_tokenizer(path)
    else:
        model, tok = load_model(path, device=device, trainable=False), load_tokenizer(path)
    teacher = built = None
    if config.teacher.path or config.teachers:  # the first of several
        block = next(iter(config.teachers.values())) if config.teachers else config.teacher
        built = build_teacher(block, model, tok, device, "logits")
        teacher = built.scorer
    try:
        return _evaluate_held_out(config, model, tok, teacher, eval_prompts, score_fn, base_dir)
    finally:  # a vLLM teacher's engine is shut down
        if built is not None:
            built.close()


def _evaluate_held_out(
    config: Config,
    model: Any,
    tok: Any,
    teacher: Any,
    eval_prompts: Sequence[Prompt] | None,
    score_fn: ScoreFn | None,
    base_dir: Path | None,
) -> dict[str, float]:
    from onpolicy.chat import render_prompt
    from onpolicy.data import filter_by_length, load_prompts
    from onpolicy.rollout.hf import HFRolloutBackend
    from onpolicy.trainer.setup import sampling_params

    if eval_prompts is None:
        eval_prompts = load_prompts(config.data, config.train.seed, base_dir)[1]
    budget = config.student.max_length - config.rollout.max_new_tokens
    held_out, _ = filter_by_length(
        list(eval_prompts)[: config.eval.num_prompts], lambda p: render_prompt(tok, p), budget
    )
    if score_fn is None:
        score_fn = task_metric(config.eval.metric, held_out, base_dir)
    return evaluate(
        model,
        tok,
        teacher,
        HFRolloutBackend(model, tok),
        held_out,
        sampling_params(config),
        config.eval.greedy,
        config.eval.batch_size,
        score_fn,
    )

"""The SFT baseline through TRL's ``SFTTrainer`` (the trainer users already trust), on the same
teacher samples, prompts per step, optimizer settings and number of optimizer steps as the engine's
own ``sft`` method, so the two rows of the table can be compared."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

from onpolicy.compare.methods import TrainSettings
from onpolicy.trainer.sources import prompt_key
from onpolicy.trainer.step_metrics import ComputeBudget
from onpolicy.types import Prompt, SamplingParams


def _row(prompt: Prompt, completion: str) -> dict:
    if prompt.messages is not None:  # conversational: TRL renders the student's chat template
        return {
            "prompt": list(prompt.messages),
            "completion": [{"role": "assistant", "content": completion}],
        }
    return {"prompt": prompt.text, "completion": completion}


def train_trl_sft(
    student: Any,
    student_tok: Any,
    teacher: Any,
    teacher_tok: Any,
    train_prompts: Sequence[Prompt],
    settings: TrainSettings,
    seed: int,
) -> tuple[ComputeBudget, list[float]]:
    """Train ``student`` in place with TRL's ``SFTTrainer`` on the same fixed teacher samples
    (``trainer.sources.draw_teacher_samples``, same seed) and the same prompt stream as the
    engine's ``sft``; returns budget and losses."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from onpolicy.data import PromptStream

    start = time.perf_counter()
    sampling = SamplingParams(
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature
    )
    texts, budget = _teacher_texts(teacher, teacher_tok, student_tok, train_prompts, sampling, seed)
    prompts = PromptStream(train_prompts, seed).take(settings.steps * settings.batch_size)
    data = Dataset.from_list([_row(p, texts[prompt_key(p)]) for p in prompts])
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            max_steps=settings.steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=settings.max_grad_norm,
            optim="adamw_torch",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=seed,
            use_cpu=True,
            completion_only_loss=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            max_length=None,
            bf16=False,
            fp16=False,
        )
        trainer = SFTTrainer(
            model=student, args=args, train_dataset=data, processing_class=student_tok
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        budget.student_train_tokens = sum(len(r["input_ids"]) for r in trainer.train_dataset)
    student.eval()
    torch.set_grad_enabled(True)
    budget.seconds = time.perf_counter() - start
    return budget, losses


def _teacher_texts(
    teacher: Any,
    teacher_tok: Any,
    student_tok: Any,
    prompts: Sequence[Prompt],
    sampling: SamplingParams,
    seed: int,
) -> tuple[dict[tuple, str], ComputeBudget]:
    """One fixed teacher sample per prompt, drawn as the trainer draws them (same seed, same
    samples as the engine's ``sft``), as text; and the teacher compute spent."""
    from alignment.vocab_map import same_tokenizer
    from onpolicy.chat import render_prompt
    from onpolicy.rollout.hf import HFRolloutBackend
    from onpolicy.trainer.sources import SampleSources, draw_teacher_samples

    src = SampleSources(
        student_backend=None,
        tokenizer=student_tok,
        end_id=None,
        teacher_backend=HFRolloutBackend(teacher, teacher_tok),
        render_teacher=lambda p: render_prompt(teacher_tok, p),
        same_tokenizer=same_tokenizer(student_tok, teacher_tok),
    )
    fixed, spent = draw_teacher_samples(prompts, sampling, src, seed)
    return {prompt_key(p): fixed.for_prompt(p)[0][1] for p in prompts}, spent

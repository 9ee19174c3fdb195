"""The SFT baseline through TRL's ``SFTTrainer`` (the trainer users already trust), on the same
teacher samples, prompts per step, optimizer settings and number of optimizer steps as the engine's
own ``sft`` method, so the two rows of the table can be compared."""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence

import torch

from onpolicy.compare.methods import Budget, Models, TeacherSamples, TrainSettings
from onpolicy.types import Prompt, SamplingParams


def _row(prompt: Prompt, completion: str) -> dict:
    if prompt.messages is not None:  # conversational: TRL renders the student's chat template
        return {
            "prompt": list(prompt.messages),
            "completion": [{"role": "assistant", "content": completion}],
        }
    return {"prompt": prompt.text, "completion": completion}


def train_trl_sft(
    models: Models, train_prompts: Sequence[Prompt], settings: TrainSettings, seed: int
) -> tuple[Budget, list[float]]:
    """Train ``models.student`` in place with TRL's ``SFTTrainer``; returns budget and losses."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    budget = Budget()
    start = time.perf_counter()
    rng = random.Random(seed)
    sampling = SamplingParams(
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature
    )
    samples = TeacherSamples(models, sampling, budget)
    prompts = [
        p
        for _ in range(settings.steps)
        for p in rng.sample(list(train_prompts), min(settings.batch_size, len(train_prompts)))
    ]
    texts = samples.texts(prompts)
    data = Dataset.from_list([_row(p, t) for p, t in zip(prompts, texts, strict=True)])
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
            model=models.student, args=args, train_dataset=data, processing_class=models.student_tok
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        for batch_ids in data["input_ids"] if "input_ids" in data.column_names else []:
            budget.student_train_tokens += len(batch_ids)
        if not budget.student_train_tokens:
            budget.student_train_tokens = sum(len(r["input_ids"]) for r in trainer.train_dataset)
    models.student.eval()
    torch.set_grad_enabled(True)
    budget.seconds = time.perf_counter() - start
    return budget, losses

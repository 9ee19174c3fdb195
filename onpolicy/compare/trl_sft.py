"""The SFT baseline through TRL's ``SFTTrainer`` (the trainer users already trust), on the same
teacher samples, prompts per step, optimizer settings and number of optimizer steps as the engine's
own ``sft`` method, so the two rows of the table can be compared.

Like for like, setting by setting (engine ``sft`` | TRL as configured here):

- samples: one fixed teacher sample per prompt (``draw_teacher_samples``, the run's seed) | the
  same call, the same samples;
- tokens: the rendered prompt + the teacher's completion ids, the student's end token only where
  the sample ended | the same ids, handed to TRL pre-tokenized (``input_ids``, ``completion_mask``).
  TRL's own text path (param ``text: true``) appends the tokenizer's EOS to *every* completion,
  also to samples cut at ``max_new_tokens`` (teaching the student to stop mid-answer), uses EOS
  where a chat tokenizer ends turns with another token, and renders conversations with the
  template's trailing text (e.g. ``<|im_end|>\\n``);
- prompts per step and their order: ``PromptStream(prompts, seed)`` | the same stream, read in order
  (``train_sampling_strategy="sequential"``; TRL's default random sampler, param ``shuffle: true``,
  reshuffles it: the same rows over the run, other prompts in each step);
- loss: prompt masked, summed over the step's completion tokens / their count | the same
  (``completion_only_loss``, ``num_items_in_batch``);
- AdamW betas (0.9, 0.999), eps 1e-8, weight decay 0, constant lr without warmup, global
  gradient-norm clip, float32, no packing, no gradient accumulation, no dropout in these models:
  the same.

With these, the two take the same optimizer steps: equal per-step losses and weights equal up to
float32 rounding (``tests/onpolicy/compare/test_trl_sft_lockstep.py``). Over long runs the rounding
differences (summation order in the loss and the gradient-norm clip) grow: on the arithmetic task
the per-step losses agree to 1e-3 for the first 52-231 of 300 steps, then drift apart like two
seeds do (docs/results/compare-arithmetic-sft-trl.md).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

from onpolicy.compare.methods import TrainSettings
from onpolicy.trainer.step_metrics import ComputeBudget
from onpolicy.types import Prompt, Rollout, SamplingParams


def train_trl_sft(
    student: Any,
    student_tok: Any,
    teacher: Any,
    teacher_tok: Any,
    train_prompts: Sequence[Prompt],
    settings: TrainSettings,
    seed: int,
    shuffle: bool = False,
    text: bool = False,
) -> tuple[ComputeBudget, list[float]]:
    """Train ``student`` in place with TRL's ``SFTTrainer`` on the engine ``sft``'s batches (see
    the module docstring); returns the budget and the per-step losses.

    ``shuffle``: TRL's random sampler reorders the prompt stream. ``text``: TRL tokenizes the
    prompt and completion texts itself (its EOS convention) instead of taking the engine's ids.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from onpolicy.data import PromptStream

    start = time.perf_counter()
    sampling = SamplingParams(
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature
    )
    prompts = PromptStream(train_prompts, seed).take(settings.steps * settings.batch_size)
    rollout, budget = engine_batches(
        teacher, teacher_tok, student_tok, train_prompts, prompts, sampling, seed
    )
    data = Dataset.from_list(_text_rows(rollout) if text else _id_rows(rollout))
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            max_steps=settings.steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            adam_beta1=0.9,
            adam_beta2=0.999,
            adam_epsilon=1e-8,
            max_grad_norm=settings.max_grad_norm,
            optim="adamw_torch_fused",  # TRL's default on torch >= 2.8; the engine's AdamW too
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=seed,
            use_cpu=True,
            completion_only_loss=True,
            dataloader_num_workers=0,
            train_sampling_strategy="random" if shuffle else "sequential",
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


def engine_batches(
    teacher: Any,
    teacher_tok: Any,
    student_tok: Any,
    train_prompts: Sequence[Prompt],
    stream: Sequence[Prompt],
    sampling: SamplingParams,
    seed: int,
) -> tuple[Rollout, ComputeBudget]:
    """What the engine's ``sft`` trains on, as one ``Rollout`` over the ``stream`` of prompts: the
    fixed teacher samples of ``train_prompts`` drawn as the trainer draws them (same seed, same
    samples) and turned into student tokens as the trainer does (``completions_for``); and the
    teacher compute spent."""
    from alignment.tokens.chat import turn_end_id
    from alignment.tokens.vocab_map import same_tokenizer
    from onpolicy.chat import render_prompt
    from onpolicy.rollout.hf import HFRolloutBackend
    from onpolicy.trainer.sources import SampleSources, completions_for, draw_teacher_samples

    src = SampleSources(
        student_backend=None,
        tokenizer=student_tok,
        end_id=turn_end_id(student_tok),  # as the trainer picks it
        teacher_backend=HFRolloutBackend(teacher, teacher_tok),
        render_teacher=lambda p: render_prompt(teacher_tok, p),
        same_tokenizer=same_tokenizer(student_tok, teacher_tok),
    )
    fixed, spent = draw_teacher_samples(train_prompts, sampling, src, seed)
    src = dataclasses.replace(src, fixed_teacher=fixed)
    ids = [render_prompt(student_tok, p) for p in stream]
    rollout, _ = completions_for("teacher", stream, ids, sampling, src)
    return rollout, spent


def _id_rows(rollout: Rollout) -> list[dict]:
    """Pre-tokenized rows: prompt + completion ids, the completion's tokens in the loss."""
    return [
        {"input_ids": [*p, *c], "completion_mask": [0] * len(p) + [1] * len(c)}
        for p, c in zip(rollout.prompt_ids_B, rollout.completion_ids_B, strict=True)
    ]


def _text_rows(rollout: Rollout) -> list[dict]:
    """Prompt/completion text rows (TRL tokenizes and renders them with its own conventions)."""
    rows = []
    for i, completion in zip(rollout.prompt_index_B, rollout.texts_B, strict=True):
        prompt = rollout.prompts[i]
        if prompt.messages is not None:  # conversational: TRL renders the student's chat template
            rows.append(
                {
                    "prompt": list(prompt.messages),
                    "completion": [{"role": "assistant", "content": completion}],
                }
            )
        else:
            rows.append({"prompt": prompt.text, "completion": completion})
    return rows

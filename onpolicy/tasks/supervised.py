"""Plain supervised training and greedy exact-match evaluation (used to build the task's models).

Not a distillation method: this trains the arithmetic teacher on gold scratchpads, and pre-trains
the students briefly so that distillation has something left to fix.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch

from onpolicy.types import PaddedBatch, Prompt


def encode_pairs(tokenizer, prompts: Sequence[Prompt]) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt ids and gold completion ids (+ EOS) for each prompt (``reference`` must be set)."""
    prompt_ids = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prompts]
    completion_ids = [
        [*tokenizer(p.reference, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        for p in prompts
    ]
    return prompt_ids, completion_ids


def train_supervised(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Prompt],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_step: Callable[[int], None] | None = None,
    schedule: str = "cosine",
) -> list[float]:
    """AdamW with linear warmup, then cosine decay (``schedule="cosine"``) or a constant rate
    (``"constant"``), on next-token loss over the gold completions.

    ``on_step(n)``, if given, is called after optimizer step ``n`` (1-based), the model in train
    mode (e.g. to save checkpoints along one schedule). Returns the per-step mean loss (mean over
    completion tokens of the batch).
    """
    prompt_ids, completion_ids = encode_pairs(tokenizer, prompts)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule={schedule!r}; use 'cosine' or 'constant'")
    warmup = max(1, steps // 20)

    def decay(s: int) -> float:
        return 1.0 if schedule == "constant" else 0.5 * (1 + math.cos(math.pi * s / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * decay(s))
    rng, losses = random.Random(seed), []
    device = next(model.parameters()).device
    model.train()
    for step in range(1, steps + 1):
        idx = rng.sample(range(len(prompts)), min(batch_size, len(prompts)))
        batch = PaddedBatch.from_ragged(
            [prompt_ids[i] for i in idx], [completion_ids[i] for i in idx], tokenizer.pad_token_id
        )
        logits = model(
            input_ids=batch.input_ids_B_T.to(device),
            attention_mask=batch.attention_mask_B_T.to(device),
        ).logits
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), batch.labels().flatten().to(device), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step)
    model.eval()
    return losses


@torch.no_grad()
def complete_prompts(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Prompt],
    max_new_tokens: int,
    batch_size: int = 256,
    temperature: float = 0.0,
) -> list[str]:
    """Completions (decoded, up to EOS) for plain-text prompts, batched, left-padded, on the
    model's device: greedy at ``temperature`` 0, else samples at that temperature (no top-k/p)."""
    model.eval()
    out: list[str] = []
    device = next(model.parameters()).device
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature > 0
        else {"do_sample": False}
    )
    for start in range(0, len(prompts), batch_size):
        chunk = [p.text for p in prompts[start : start + batch_size]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            **sampling,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


def evaluate_exact_match(model, tokenizer, task, max_new_tokens: int) -> float:
    """Mean task score of greedy completions on ``task.eval_prompts``."""
    texts = complete_prompts(model, tokenizer, task.eval_prompts, max_new_tokens)
    return task.mean_score(texts, task.eval_prompts) or 0.0

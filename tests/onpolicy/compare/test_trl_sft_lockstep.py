"""The engine's ``sft`` and the harness's TRL ``SFTTrainer`` baseline take the same optimizer steps:
same fixed teacher samples, same prompts per step in the same order, same loss tokens and
normalisation, same AdamW. Equal per-step losses and equal weights after the run (tiny real models).

Before the harness read its prompt stream in order (``train_sampling_strategy="sequential"``) and
handed TRL the engine's token ids, TRL's random sampler reshuffled the stream (other prompts in each
step) and TRL's text path put EOS on truncated samples: other steps, other weights (checked below).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from onpolicy.compare.methods import BUILTIN_METHODS, TrainSettings, trainer_config
from onpolicy.types import Prompt

STEPS, BATCH = 4, 4


@pytest.fixture(scope="module")
def dirs() -> tuple[str, str]:
    """(student, teacher): two tiny Llamas sharing the tiny BPE tokenizer (built once, cached)."""
    from onpolicy.tiny import tiny_model_dir

    student = tiny_model_dir("tiny", seed=2, pretrain_steps=100)
    teacher = tiny_model_dir("small", seed=1, pretrain_steps=300)
    return str(student), str(teacher)


def _prompts() -> list[Prompt]:
    from onpolicy.tiny import corpus_pairs

    return [Prompt(text=q) for q, _ in corpus_pairs()[:10]]  # 10 prompts: epochs wrap


def _settings() -> TrainSettings:
    return TrainSettings(steps=STEPS, batch_size=BATCH, lr=3e-3, max_new_tokens=10)


def _ours(dirs: tuple[str, str], out: Path) -> tuple[dict[str, torch.Tensor], list[float]]:
    from onpolicy.models import load_model
    from onpolicy.trainer import train

    config = trainer_config(BUILTIN_METHODS["sft"], _settings(), 0, dirs[0], dirs[1], out)
    result = train(config, train_prompts=_prompts())
    return load_model(str(result.final_dir)).state_dict(), [float(x) for x in result.losses]


def _trl(dirs: tuple[str, str], **params: bool) -> tuple[dict[str, torch.Tensor], list[float]]:
    from onpolicy.compare.trl_sft import train_trl_sft
    from onpolicy.models import load_model, load_tokenizer

    student, teacher = load_model(dirs[0], trainable=True), load_model(dirs[1])
    stok, ttok = load_tokenizer(dirs[0]), load_tokenizer(dirs[1])
    _, losses = train_trl_sft(student, stok, teacher, ttok, _prompts(), _settings(), 0, **params)
    return student.state_dict(), losses


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_engine_sft_and_trl_sft_take_the_same_steps(dirs, tmp_path):
    from onpolicy.models import load_model

    torch.set_num_threads(1)
    ours, our_losses = _ours(dirs, tmp_path / "ours")
    theirs, trl_losses = _trl(dirs)
    moved = _max_diff(ours, load_model(dirs[0]).state_dict())
    assert moved > 1e-3  # the runs did train: equal weights are not equal initial weights
    assert len(our_losses) == len(trl_losses) == STEPS
    # TRL logs the step loss rounded to 4 significant digits
    assert our_losses == pytest.approx(trl_losses, rel=1e-3, abs=1e-4)
    same = _max_diff(ours, theirs)
    assert same < 1e-5  # float32 rounding only (the update moved weights by ~1e-2)

    # TRL's default (random) sampler: same rows, other prompts per step -> other steps
    shuffled, shuffled_losses = _trl(dirs, shuffle=True)
    assert _max_diff(ours, shuffled) > 100 * max(same, 1e-7)
    assert shuffled_losses != pytest.approx(our_losses, rel=1e-3, abs=1e-4)

    # TRL tokenizing the texts itself: EOS appended to samples cut at max_new_tokens too, and EOS
    # where this chat tokenizer's samples end on <|im_end|> -> other loss tokens, other steps
    texted, texted_losses = _trl(dirs, text=True)
    assert _max_diff(ours, texted) > 100 * max(same, 1e-7)
    assert texted_losses[0] != pytest.approx(our_losses[0], rel=1e-3)

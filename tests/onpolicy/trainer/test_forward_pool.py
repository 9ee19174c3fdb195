"""The forward measure (``eval.forward_nll``): the student's NLL of held-out teacher samples,
checked against a hand loop over ``torch.log_softmax`` in float64 (one unpadded row at a time),
and wired into the trainer's evaluations for a same-tokenizer and a cross-tokenizer pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from trainer_configs import make_config

from onpolicy.api import completion_rollout
from onpolicy.models import load_model, load_tokenizer, output_vocab_size
from onpolicy.tiny import tiny_model_dir
from onpolicy.trainer import train
from onpolicy.trainer.forward_pool import draw_pool, forward_measure, nll_sum, pool_sums
from onpolicy.trainer.run import prepare_prompts
from onpolicy.trainer.setup import build_components, sampling_params
from onpolicy.types import Prompt

CHAR_TEACHER = "'tiny:small,tokenizer=char,seed=2,pretrain_steps=300'"


def _hand_nll(model, prompt_ids_B, completion_ids_B, vocab):
    """float64 ``-sum log p(completion | prompt)``: each row alone, each position alone."""
    total = 0.0
    for p, c in zip(prompt_ids_B, completion_ids_B, strict=True):
        ids = torch.tensor([list(p) + list(c)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        for j, token in enumerate(c):
            pos = len(p) + j - 1  # the position that predicts completion token j
            total -= float(torch.log_softmax(logits[pos, :vocab], dim=-1)[token])
    return total


def test_nll_sum_matches_a_float64_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 11, generator=g) * 4
    targets = torch.randint(0, 11, (37,), generator=g)
    hand = -sum(float(torch.log_softmax(logits[n].double(), dim=-1)[targets[n]]) for n in range(37))
    assert nll_sum(logits, targets) == pytest.approx(hand, rel=1e-6)
    assert nll_sum(logits[:0], targets[:0]) == 0.0
    uniform = torch.zeros(5, 8)  # every token at 1/8: log 8 nats each
    assert nll_sum(uniform, torch.arange(5)) == pytest.approx(5 * torch.log(torch.tensor(8.0)))


def test_forward_measure_divides_by_tokens_and_bytes():
    out = forward_measure(12.0, 4.0, 6.0)
    assert out == {"eval/forward_nll_per_token": 3.0, "eval/forward_nll_per_byte": 2.0}
    assert forward_measure(0.0, 0.0, 0.0) == {}  # nothing scored: no metric


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_pool_sums_match_a_hand_loop_on_a_tiny_model(batch_size):
    """Padded batches (ragged prompts and completions, an empty one) give the per-row loop's sum."""
    path = tiny_model_dir("tiny", seed=2, pretrain_steps=100)
    model, tok = load_model(path).eval(), load_tokenizer(path)
    prompts = [Prompt(text=t) for t in ("2+2=", "Say hello to the world", "x", "abc")]
    texts = ["4", "hello world, twice: hello world", "", "abcabc"]
    pool = completion_rollout(prompts, texts, tok)
    nll, tokens, nbytes = pool_sums(model, tok, pool, batch_size)
    vocab = min(len(tok), output_vocab_size(model))
    hand = _hand_nll(model, pool.prompt_ids_B, pool.completion_ids_B, vocab)
    assert nll == pytest.approx(hand, rel=1e-5)
    assert tokens == sum(len(c) for c in pool.completion_ids_B)  # the stop tokens included
    assert nbytes == sum(len(t.encode()) for t in texts)


def _metrics(cfg):
    text = (Path(cfg.train.output_dir) / "metrics.jsonl").read_text()
    rows = [json.loads(x) for x in text.splitlines()]
    return {int(r["step"]): r for r in rows if "eval/forward_nll_per_token" in r}


@pytest.mark.parametrize("teacher", ["same", "cross"])
def test_trainer_logs_the_forward_measure_at_every_evaluation(tmp_path, teacher):
    """Each evaluation logs the measure; two objectives from the same student see the same pool
    (equal step-0 values), which is the teacher's samples in the student's tokens: the step-0
    value is the hand loop's NLL of that pool."""
    extra = [f"teacher.path={CHAR_TEACHER}", "teacher.mode=auto"] if teacher == "cross" else []
    common = ["eval.forward_nll=true", "eval.every=2", "train.steps=4", *extra]
    runs = {}
    for objective in ("gold" if teacher == "cross" else "reverse_kl", "sft"):
        out = tmp_path / objective
        runs[objective] = make_config(out, f"objective.name={objective}", *common)
        train(runs[objective])
    logged = {name: _metrics(cfg) for name, cfg in runs.items()}
    for name, by_step in logged.items():
        assert sorted(by_step) == [0, 2, 4], name
        for r in by_step.values():
            assert 0 < r["eval/forward_nll_per_token"] < 20
            assert 0 < r["eval/forward_nll_per_byte"] < 20
    first = [logged[n][0]["eval/forward_nll_per_token"] for n in runs]
    assert first[0] == first[1]  # the same pool, the same untrained student
    assert logged["sft"][4]["eval/forward_nll_per_token"] != first[1]  # training moved it
    cfg = runs["sft"]  # the pool rebuilt outside the trainer, scored by the hand loop
    c = build_components(cfg, Accelerator(cpu=True))
    _, held_out, _ = prepare_prompts(cfg, c.tokenizer, None, None, None)
    teacher_model = getattr(c.sources.teacher_backend, "model", None)
    pool = draw_pool(held_out, sampling_params(cfg), c.sources, teacher_model)
    assert pool is not None and len(pool) == len(held_out)
    assert max(max(ids, default=0) for ids in pool.completion_ids_B) < len(c.tokenizer)
    student = c.raw_model.eval()  # the untrained student, as at step 0
    vocab = min(len(c.tokenizer), output_vocab_size(student))
    hand = _hand_nll(student, pool.prompt_ids_B, pool.completion_ids_B, vocab)
    tokens = sum(len(x) for x in pool.completion_ids_B)
    assert first[1] == pytest.approx(hand / tokens, rel=1e-5)


def test_the_measure_does_not_change_training(tmp_path):
    """The pool is drawn with its own seed in a forked RNG: the same run with and without
    ``eval.forward_nll`` trains on the same samples to the same losses."""
    losses = {}
    for flag in ("true", "false"):
        cfg = make_config(tmp_path / flag, f"eval.forward_nll={flag}", "eval.every=2",
                          "train.steps=4")  # fmt: skip
        train(cfg)
        text = (Path(cfg.train.output_dir) / "metrics.jsonl").read_text()
        rows = [json.loads(x) for x in text.splitlines()]
        losses[flag] = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses["true"]) == 4 and losses["true"] == losses["false"]

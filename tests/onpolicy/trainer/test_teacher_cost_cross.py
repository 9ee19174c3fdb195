"""The compare planner's charge for a cross-tokenizer teacher against what the trainer records: the
teacher reads its own tokenization of the completion, ``q C`` positions for ``C`` student tokens
(``onpolicy.compare.token_ratio``). A short run on each tiny cross pair records exactly the planned
FLOPs; the same-tokenizer plan is the formula it always was."""

from __future__ import annotations

import json

import pytest
from trainer_configs import CROSS_ANSWER as ANSWER
from trainer_configs import CROSS_PAIRS as PAIRS
from trainer_configs import cross_hidden_sft_config
from trainer_configs import tiny_tok as _tok

from onpolicy.chat import render_prompts
from onpolicy.compare.budget import Sizes, _teacher_ratio, run_flops, step_cost
from onpolicy.compare.hidden_cost import span_ends_per_token, with_hidden_cost
from onpolicy.compare.token_ratio import teacher_tokens_per_token
from onpolicy.data import load_prompts
from onpolicy.trainer import train
from onpolicy.trainer.setup import build_objective
from onpolicy.types import Prompt

ROWS, STEPS = 4, 2


def test_teacher_tokens_per_token_by_hand():
    """ASCII references: the char teacher reads one token per character, so ``q`` = (chars + n) /
    (BPE tokens + n) for a BPE student (each ``+ n``: the stop token of each of the ``n``
    references), its inverse for a char student; 1.0 for the same tokenizer or no reference."""
    bpe, char = _tok("bpe"), _tok("char")
    texts = ["4 plus 9 is 13.", "Count: 1, 2, 3, 4.", "Repeat after me: hello world"]
    prompts = [Prompt(text="q", reference=t) for t in texts]
    chars = sum(len(t) for t in texts) + 3
    bpe_tokens = sum(len(bpe(t, add_special_tokens=False)["input_ids"]) for t in texts) + 3
    assert chars / bpe_tokens > 1.6  # the old plan charged a char teacher C: 1/q of its reads
    assert teacher_tokens_per_token(bpe, char, prompts) == pytest.approx(chars / bpe_tokens)
    assert teacher_tokens_per_token(char, bpe, prompts) == pytest.approx(bpe_tokens / chars)
    assert teacher_tokens_per_token(char, bpe, [Prompt(text="q")]) == 1.0
    assert _teacher_ratio(bpe, bpe, prompts) == 1.0  # the same tokenizer: never measured


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_planned_flops_equal_recorded_across_tokenizers(tmp_path, pair):
    """SFT + a hidden term on the dataset's answers (the same prompt and ``ANSWER`` in every row, so
    the prompts' mean lengths and ``q`` are exact for any batch): the whole plan, the teacher's
    scoring ``2 N_t (P_t + q C)`` per row included, equals the trainer's recorded FLOPs, and the
    teacher positions recorded are its own tokenization, counted here by hand."""
    _, _, s_kind, t_kind = PAIRS[pair]
    data = tmp_path / "same_answer.jsonl"
    row = {"messages": [{"role": "user", "content": "Say it."}], "completion": ANSWER}
    data.write_text((json.dumps(row, ensure_ascii=False) + "\n") * 12)
    cfg = cross_hidden_sft_config(tmp_path, pair, data, STEPS, ROWS)
    prompts, _ = load_prompts(cfg.data, cfg.train.seed)
    s_tok, t_tok = _tok(s_kind), _tok(t_kind)
    q = teacher_tokens_per_token(s_tok, t_tok, prompts)
    completion = len(s_tok(ANSWER, add_special_tokens=False)["input_ids"]) + 1  # + the stop
    p_s, p_t = (len(render_prompts(t, prompts[:1])[0]) for t in (s_tok, t_tok))
    result = train(cfg)
    n_s, n_t = 1000, 100_000  # any sizes: planned and recorded FLOPs are linear in both
    r = span_ends_per_token(s_tok, t_tok, prompts)  # the projection's compared positions
    sizes = Sizes(n_s, n_t, float(p_s), float(p_t), completion, ROWS, len(prompts),
                  span_ends_per_token=r, teacher_tokens_per_token=q)  # fmt: skip
    objective = build_objective(cfg)
    plan = with_hidden_cost(step_cost(objective, sizes, STEPS), cfg, objective, sizes)
    recorded = result.budget.flops(n_s, n_t)
    assert run_flops(plan, STEPS) == pytest.approx(recorded, rel=1e-9)
    t_completion = len(t_tok(ANSWER, add_special_tokens=False)["input_ids"]) + 1  # + its end
    assert result.budget.teacher_tokens == STEPS * ROWS * (p_t + t_completion)  # by hand
    assert q * completion == pytest.approx(t_completion, rel=1e-12)
    old = STEPS * ROWS * (p_t + completion)  # the old plan: the teacher read C student tokens
    if t_kind == "char":
        assert result.budget.teacher_tokens > old + STEPS * ROWS * 0.5 * completion
    else:
        assert result.budget.teacher_tokens < old - STEPS * ROWS * 0.3 * completion


def test_same_tokenizer_plan_is_unchanged():
    """Same tokenizer (``q`` = 1, the default): on-policy reverse KL costs ``6 N_s (P_s + C)`` +
    ``2 N_s (P_s + C)`` + ``2 N_t (P_t + C)`` per row, the plan before ``q`` existed."""
    from onpolicy.objectives.reverse_kl import ReverseKL

    sizes = Sizes(10, 100, 2.0, 3.0, 4, 5, 7)
    assert sizes.teacher_tokens_per_token == 1.0
    per_row = 6 * 10 * (2 + 4) + 2 * 10 * (2 + 4) + 2 * 100 * (3 + 4)
    assert step_cost(ReverseKL(), sizes, 3).per_step(0) == per_row * 5

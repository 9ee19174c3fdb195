"""The compare planner's cost of the cross-tokenizer hidden term against what the trainer
records: the planner charges ``6 P`` per aligned span end, ``C x r`` per row with ``r`` the aligned
spans per student token of the training references (the stop token a span of its own); a short
run on each tiny cross pair records exactly that many projection FLOPs."""

from __future__ import annotations

import json

import pytest
from trainer_configs import CROSS_ANSWER as ANSWER
from trainer_configs import CROSS_CHAR, cross_hidden_sft_config, make_config
from trainer_configs import CROSS_PAIRS as PAIRS
from trainer_configs import tiny_tok as _tok

from onpolicy.compare.budget import Sizes
from onpolicy.compare.hidden_cost import projection_params, projection_step_flops
from onpolicy.compare.hidden_cost import span_ends_per_token as ratio
from onpolicy.data import load_prompts
from onpolicy.trainer import train
from onpolicy.types import Prompt

ROWS, STEPS = 4, 2


def test_spans_per_token_by_hand():
    """On ASCII text every BPE boundary is a character boundary, so the aligned spans are the BPE
    tokens: ``r`` = 1 for a BPE student of a char teacher, ``bpe tokens / chars`` the other way
    (each count + 1 per reference for the stop token)."""
    bpe, char = _tok("bpe"), _tok("char")
    texts = ["4 plus 9 is 13.", "Count: 1, 2, 3, 4.", "Repeat after me: hello world"]
    prompts = [Prompt(text="q", reference=t) for t in texts]
    assert ratio(bpe, char, prompts) == pytest.approx(1.0)
    bpe_tokens = sum(len(bpe(t, add_special_tokens=False)["input_ids"]) for t in texts)
    expected = (bpe_tokens + 3) / (sum(len(t) for t in texts) + 3)
    assert expected < 0.6  # the old plan (every student token) charged this pair 1/r too much
    assert ratio(char, bpe, prompts) == pytest.approx(expected)
    assert ratio(char, bpe, [Prompt(text="q")]) == 1.0  # no references: the upper bound


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_planned_projection_flops_equal_recorded(tmp_path, pair):
    """SFT + hidden on the dataset's answers (every row the same ``ANSWER``, so any batch has the
    references' ratio): the plan's ``6 P x C x r x rows`` per step, ``C`` the answer's tokens and
    its stop token, equals the recorded ``ComputeBudget.projection_flops``."""
    _, _, s_kind, t_kind = PAIRS[pair]
    data = tmp_path / "same_answer.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Say it ({i})."}], "completion": ANSWER}
            for i in range(12)]  # fmt: skip
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = cross_hidden_sft_config(tmp_path, pair, data, STEPS, ROWS)
    prompts, _ = load_prompts(cfg.data, cfg.train.seed)
    s_tok = _tok(s_kind)
    r = ratio(s_tok, _tok(t_kind), prompts)
    completion = len(s_tok(ANSWER, add_special_tokens=False)["input_ids"]) + 1  # + the stop
    sizes = Sizes(1, 1, 1.0, 1.0, completion, ROWS, len(prompts), span_ends_per_token=r)
    planned = STEPS * projection_step_flops(cfg, sizes)
    result = train(cfg)
    recorded = result.budget.projection_flops
    assert recorded > 0 and recorded % (6 * projection_params(cfg)) == 0  # whole span ends
    assert planned == pytest.approx(recorded, rel=1e-9)
    every_token = 6 * projection_params(cfg) * completion * ROWS * STEPS  # the old plan
    if s_kind == "char":  # the old plan charged the char student every character
        assert recorded < 0.6 * every_token
    else:  # a char teacher: every BPE token ends a span
        assert recorded == every_token


def test_the_plan_scales_only_the_cross_projection_by_r(tmp_path):
    """``r`` scales the projection of a cross-tokenizer hidden term, not a same-tokenizer one."""
    sizes = Sizes(10, 100, 2.0, 3.0, 4, 5, 7, span_ends_per_token=0.5)
    cross = make_config(tmp_path, f"teacher.path={CROSS_CHAR}", "teacher.mode=auto",
                        "objective.name=gold", "hidden.weight=0.5")  # fmt: skip
    same = make_config(tmp_path, "hidden.weight=0.5", "hidden.projection=linear")
    assert projection_step_flops(cross, sizes) == 6 * projection_params(cross) * 4 * 0.5 * 5
    assert projection_step_flops(same, sizes) == 6 * projection_params(same) * 4 * 5

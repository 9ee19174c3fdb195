"""The long_arithmetic task: gold completions are correct, splits are disjoint, lengths as meant."""

from __future__ import annotations

import collections

import pytest

from onpolicy.errors import ConfigError
from onpolicy.tasks import make_task
from onpolicy.tasks.arithmetic import exact_match, final_answer, make_problem
from onpolicy.tasks.long_arithmetic import (
    completion_tokens,
    correct_steps,
    long_arithmetic_task,
    make_long_problem,
    parse_scratchpad,
    split_of,
    steps_consistent,
)
from onpolicy.types import Prompt


def _operands(prompt_text: str) -> tuple[int, int]:
    a, b = prompt_text.rstrip("=").split("+")
    return int(a), int(b)


def test_hand_written_problem():
    assert make_long_problem(47, 85, 3, [1, 0, 2]) == (
        "047+085=",
        "5+7+0=12|4+8+1=13|1+0+0=01|#0132",
    )
    assert make_long_problem(47, 85, 3) == make_problem(47, 85, 3)


def test_gold_completions_are_correct_and_use_several_orders():
    task = long_arithmetic_task(digits=8, min_digits=2, variants=4, num_train=500, num_eval=100)
    orders = collections.Counter()
    for p in (*task.train_prompts, *task.eval_prompts):
        a, b = _operands(p.text)
        assert int(final_answer(p.reference)) == a + b
        assert exact_match(p.reference, p) == 1.0
        assert steps_consistent(p.reference)
        steps = parse_scratchpad(p.reference)
        digits = len(p.text.split("+")[0])
        assert len(steps) == digits
        carry = 0
        for (x, y, z, total), da, db in zip(
            steps, reversed(f"{a:0{digits}d}"), reversed(f"{b:0{digits}d}"), strict=True
        ):  # every step adds the column's two digits and the carry, in some order
            assert sorted([x, y, z]) == sorted([int(da), int(db), carry])
            assert total == int(da) + int(db) + carry
            orders[(x, y, z).index(carry)] += 1  # where the carry was written
            carry = total // 10
    assert len(orders) == 3  # not one fixed order: the carry is written first, second or last


def test_one_variant_is_the_canonical_scratchpad():
    task = long_arithmetic_task(digits=4, variants=1, num_train=50, num_eval=20)
    for p in task.train_prompts:
        assert (p.text, p.reference) == make_problem(*_operands(p.text), 4)


def test_splits_are_disjoint_and_fixed():
    kw = {"digits": 3, "min_digits": 2, "num_train": 2000, "num_eval": 100}
    train = long_arithmetic_task(**kw).train_prompts
    valid = long_arithmetic_task(**kw, eval_split="valid").eval_prompts
    test = long_arithmetic_task(**kw, eval_split="test").eval_prompts
    sets = [{_operands(p.text) for p in s} for s in (train, valid, test)]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    assert all(split_of(a, b) == "valid" for a, b in sets[1])
    assert all(split_of(a, b) == "test" for a, b in sets[2])
    shares = collections.Counter(split_of(a, b) for a in range(200) for b in range(200))
    assert 0.03 < shares["valid"] / 40000 < 0.07 and 0.03 < shares["test"] / 40000 < 0.07


def test_lengths_in_the_intended_range():
    task = long_arithmetic_task(digits=8, min_digits=2, num_train=700, num_eval=50)
    lengths = collections.Counter(len(p.reference) for p in task.train_prompts)
    assert set(lengths) == {completion_tokens(d) for d in range(2, 9)}
    assert completion_tokens(8) == 82 and min(lengths.values()) > 50  # 80+ tokens, every length
    fixed = long_arithmetic_task(digits=8, num_train=20, num_eval=5)
    assert {len(p.reference) for p in fixed.train_prompts} == {82}


def test_registered_and_bad_options():
    task = make_task("long_arithmetic", digits=3, num_train=10, num_eval=5)
    assert task.name == "long_arithmetic" and len(task.train_prompts) == 10
    with pytest.raises(ConfigError, match="variants"):
        long_arithmetic_task(variants=7)
    with pytest.raises(ConfigError, match="min_digits"):
        long_arithmetic_task(digits=3, min_digits=4)
    with pytest.raises(ConfigError, match="eval_split"):
        long_arithmetic_task(eval_split="train")
    with pytest.raises(ConfigError, match="distinct"):
        long_arithmetic_task(digits=1, num_train=100)


def test_malformed_scratchpads():
    assert parse_scratchpad("1+2+0=03|#03") == [(1, 2, 0, 3)]
    assert parse_scratchpad("1+2=03|#03") is None
    assert parse_scratchpad("1+2+0=03") is None
    assert not steps_consistent("1+2+0=04|#04")


def test_correct_steps_counts_the_right_prefix():
    text, gold = make_long_problem(47, 85, 3, [1, 0, 2])
    prompt = Prompt(text=text, reference=gold)
    assert correct_steps(gold, prompt) == 3
    assert correct_steps("7+5+0=12|4+8+1=13|1+0+0=01|#0132", prompt) == 3  # another valid order
    assert correct_steps("5+7+0=12|4+8+0=12|1+0+0=01|#0122", prompt) == 1  # dropped carry
    assert correct_steps("5+7+0=12|4+8+1=13|0+1", prompt) == 2  # cut off mid-step
    assert correct_steps("5+7+0=12|x", prompt) == 1
    assert correct_steps("#0132", prompt) == 0

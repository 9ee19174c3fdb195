"""The arithmetic task: generator, split, metric and tokenizers, on hand-checked cases."""

from __future__ import annotations

import pytest

from onpolicy.errors import ConfigError
from onpolicy.tasks import make_task
from onpolicy.tasks.arith_models import bpe_tokenizer, char_tokenizer, max_new_tokens
from onpolicy.tasks.arithmetic import (
    arithmetic_task,
    exact_match,
    final_answer,
    is_held_out,
    make_problem,
    make_prompts,
)
from onpolicy.types import Prompt


def test_problem_hand_checked():
    assert make_problem(47, 85, 3) == ("047+085=", "7+5+0=12|4+8+1=13|0+0+1=01|#0132")
    # a carry that runs through every column
    assert make_problem(999, 1, 3) == ("999+001=", "9+1+0=10|9+0+1=10|9+0+1=10|#1000")
    assert make_problem(0, 0, 2) == ("00+00=", "0+0+0=00|0+0+0=00|#000")


def test_problem_rejects_operand_too_long():
    with pytest.raises(ConfigError, match="do not fit"):
        make_problem(1000, 1, 3)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("7+5+0=12|#0132", "0132"),
        ("#12x3", "12"),
        ("no answer", None),
        ("ends with #", None),
        ("#1|#2", "2"),
    ],
)
def test_final_answer(text, want):
    assert final_answer(text) == want


def test_exact_match_compares_integers():
    prompt = Prompt(text="047+085=", reference="7+5+0=12|4+8+1=13|0+0+1=01|#0132")
    assert exact_match("anything|#0132", prompt) == 1.0
    assert exact_match("#132", prompt) == 1.0  # leading zeros do not matter
    assert exact_match("7+5+0=12|4+8+1=13|0+0+1=01|#0131", prompt) == 0.0
    assert exact_match("7+5+0=12|4+8+1=13", prompt) == 0.0  # never reached the answer
    with pytest.raises(ConfigError, match="reference"):
        exact_match("#1", Prompt(text="1+1="))


def test_every_reference_is_correct():
    for p in make_prompts(300, 3, seed=5):
        a, b = (int(x) for x in p.text.rstrip("=").split("+"))
        assert int(final_answer(p.reference)) == a + b
        assert exact_match(p.reference, p) == 1.0


def test_split_is_disjoint_and_seeded():
    task = arithmetic_task(digits=2, num_train=800, num_eval=60, seed=3)
    train = {p.text for p in task.train_prompts}
    held = {p.text for p in task.eval_prompts}
    assert len(train) == 800 and len(held) == 60 and not train & held
    assert all(is_held_out(*map(int, t.rstrip("=").split("+"))) for t in held)
    again = arithmetic_task(digits=2, num_train=800, num_eval=60, seed=3)
    assert again.train_prompts == task.train_prompts and again.eval_prompts == task.eval_prompts
    # a bigger training set never takes a held-out problem
    bigger = arithmetic_task(digits=2, num_train=2000, num_eval=60, seed=3)
    assert not {p.text for p in bigger.train_prompts} & held
    share = sum(is_held_out(a, b) for a in range(100) for b in range(100)) / 10_000
    assert 0.03 < share < 0.07


def test_task_registry_and_score():
    task = make_task("arithmetic", digits=2, num_train=50, num_eval=10)
    refs = [p.reference for p in task.eval_prompts]
    assert task.mean_score(refs, task.eval_prompts) == 1.0
    assert task.mean_score(["#"] * 10, task.eval_prompts) == 0.0
    with pytest.raises(ConfigError, match="unknown task"):
        make_task("nope")
    # one unknown key is reported alone, with the closest option
    with pytest.raises(
        ConfigError,
        match=r"^task.digitz is not an option of task 'arithmetic'; did you mean 'digits'\?",
    ):
        make_task("arithmetic", digitz=2, num_eval=10)


def test_tokenizers_round_trip_with_different_boundaries():
    prompts = make_prompts(200, 3, seed=0)
    texts = [p.text + p.reference for p in prompts]
    char, bpe = char_tokenizer(), bpe_tokenizer(texts)
    text = texts[0]
    char_ids = char(text, add_special_tokens=False)["input_ids"]
    bpe_ids = bpe(text, add_special_tokens=False)["input_ids"]
    assert len(char_ids) == len(text)  # one token per character
    assert char.decode(char_ids) == text and bpe.decode(bpe_ids) == text
    assert len(bpe_ids) < len(char_ids)  # merges: the boundaries differ
    assert char.eos_token_id == bpe.eos_token_id == 1 and char.pad_token_id == 0
    gold = len(char(prompts[0].reference, add_special_tokens=False)["input_ids"]) + 1
    assert max_new_tokens(3) >= gold

"""``examples/evidence/answer_copy.py``: the answer a scratchpad implies, checked against gold
completions built by the task itself (every order variant, with and without a final carry), and a
read-back error told apart from an arithmetic error."""

from __future__ import annotations

import random

from examples.evidence.answer_copy import implied_answer, written_answer
from onpolicy.tasks.long_arithmetic import correct_steps, make_long_problem
from onpolicy.types import Prompt


def test_gold_completions_imply_their_own_answer():
    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.randrange(10**6), rng.randrange(10**6)
        orders = [rng.randrange(4) for _ in range(6)]
        _, gold = make_long_problem(a, b, 6, orders)
        assert implied_answer(gold) == written_answer(gold) == f"{a + b:07d}"


def test_a_misread_answer_line_keeps_right_steps_but_breaks_the_copy():
    # the 21k student's kind of error (docs/results/evidence-long-capacity.md): steps right,
    # answer line read back wrong
    prompt, gold = make_long_problem(243528, 13896, 6)
    misread = gold[: gold.index("#") + 1] + "0088824"
    assert correct_steps(misread, Prompt(text=prompt, reference=gold)) == 6
    assert implied_answer(misread) == "0257424" != written_answer(misread)


def test_malformed_scratchpad_implies_nothing():
    assert implied_answer("0+8+6=14|1+9=12|#0257424") is None
    assert implied_answer("0+8+6=14") is None and written_answer("0+8+6=14") == ""

"""Long multi-digit addition with a scratchpad written in several valid orders: the regime task.

The ``arithmetic`` task's problem (``make_problem``), with two knobs the evidence work needs:

- ``digits``: output length. A ``digits``-digit problem's completion is ``10 * digits + 2``
  characters (+ EOS): 8 digits give 82 + 1 tokens, 3 digits give 32 + 1.
- ``variants``: how many orders a column step may be written in. Step ``a+b+carry=sum`` may list
  its three addends in any of the first ``variants`` orders of ``ORDERS`` (``a+b+c``, ``b+a+c``,
  ``c+a+b``, ...). A teacher trained on gold scratchpads whose steps pick an order uniformly at
  random is not near-deterministic: ``log(variants)`` nats per step of valid alternatives, which a
  small student must either cover (forward KL / SFT) or drop (reverse KL is mode-seeking)::

      00000347+00000985=7+5+0=12|8+4+1=13|1+3+9=13|...|#000001332

The metric is exact match on the number after ``#`` (``arithmetic.exact_match``).

Splits are fixed by a hash of the problem (``split_of``): ``test`` is exactly the ``arithmetic``
task's held-out side (1 in 20), ``valid`` another 1 in 20 (for choices such as learning rates), and
the rest ``train``; models and training sets only ever see ``train``.
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

from onpolicy.errors import ConfigError
from onpolicy.tasks.arithmetic import exact_match, is_held_out, make_problem
from onpolicy.tasks.base import Task, register_task
from onpolicy.types import Prompt

Split = Literal["train", "valid", "test"]

ORDERS: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2),
    (1, 0, 2),
    (2, 0, 1),
    (2, 1, 0),
    (0, 2, 1),
    (1, 2, 0),
)
"""Orders of the addends ``(a, b, carry)`` a column step may be written in."""


def split_of(a: int, b: int) -> Split:
    """The fixed split of problem ``a + b``: ``test`` = ``arithmetic.is_held_out`` (1 in 20),
    ``valid`` = another 1 in 20 (a second hash), else ``train``."""
    if is_held_out(a, b):
        return "test"
    digest = hashlib.blake2b(f"valid:{a}+{b}".encode(), digest_size=4).digest()
    return "valid" if int.from_bytes(digest, "little") % 19 == 0 else "train"


def make_long_problem(
    a: int, b: int, digits: int, orders: list[int] | None = None
) -> tuple[str, str]:
    """``(prompt, completion)`` for ``a + b`` with step ``i`` written in ``ORDERS[orders[i]]``
    (default: all canonical, which is ``arithmetic.make_problem``'s text).

    >>> make_long_problem(47, 85, 3, [1, 0, 2])
    ('047+085=', '5+7+0=12|4+8+1=13|1+0+0=01|#0132')
    """
    prompt, gold = make_problem(a, b, digits)
    if orders is None:
        return prompt, gold
    steps, answer = gold[: gold.index("|#")].split("|"), gold[gold.index("#") :]
    if len(orders) != len(steps):
        raise ConfigError(f"{len(orders)} orders for {len(steps)} column steps")
    out = []
    for step, k in zip(steps, orders, strict=True):
        lhs, total = step.split("=")
        parts = lhs.split("+")
        out.append("+".join(parts[j] for j in ORDERS[k]) + "=" + total)
    return prompt, "|".join(out) + "|" + answer


def parse_scratchpad(completion: str) -> list[tuple[int, int, int, int]] | None:
    """The steps ``(x, y, z, total)`` of a completion in this format, or None when malformed."""
    if "|#" not in completion:
        return None
    steps = []
    for step in completion[: completion.index("|#")].split("|"):
        lhs, eq, total = step.partition("=")
        parts = lhs.split("+")
        if not eq or len(parts) != 3 or not all(p.isdigit() for p in [*parts, total]):
            return None
        steps.append((int(parts[0]), int(parts[1]), int(parts[2]), int(total)))
    return steps


def steps_consistent(completion: str) -> bool:
    """Every step's addends sum to its written total (a check of the format, not of the digits
    chosen: a gold completion passes, so does a self-consistent wrong one)."""
    steps = parse_scratchpad(completion)
    return steps is not None and all(x + y + z == t for x, y, z, t in steps)


def correct_steps(completion: str, prompt: Prompt) -> int:
    """How many leading column steps of ``completion`` are right (the column's two digits and the
    carry, in any order, and their sum) before the first wrong or malformed one."""
    a_text, b_text = prompt.text.rstrip("=").split("+")
    steps = parse_scratchpad(completion + ("" if "|#" in completion else "|#"))
    if steps is None:  # a malformed step somewhere: count the well-formed prefix
        parts = completion.split("|")
        steps = []
        for part in parts:
            parsed = parse_scratchpad(part + "|#")
            if parsed is None:
                break
            steps += parsed
    carry, n = 0, 0
    for (x, y, z, total), da, db in zip(steps, reversed(a_text), reversed(b_text), strict=False):
        want = int(da) + int(db) + carry
        if sorted([x, y, z]) != sorted([int(da), int(db), carry]) or total != want:
            break
        carry, n = want // 10, n + 1
    return n


def make_long_prompts(
    n: int,
    digits: int,
    variants: int,
    seed: int,
    split: Split = "train",
    min_digits: int | None = None,
) -> list[Prompt]:
    """``n`` distinct random problems of ``split``, each with operands of ``d`` digits, ``d``
    uniform in ``[min_digits, digits]`` (default: always ``digits``), and a reference completion
    whose step orders are drawn uniformly from the first ``variants`` of ``ORDERS`` (seeded)."""
    low = digits if min_digits is None else min_digits
    if not 1 <= variants <= len(ORDERS):
        raise ConfigError(f"variants={variants}; use 1..{len(ORDERS)}")
    if not 1 <= low <= digits:
        raise ConfigError(f"min_digits={min_digits} must be in 1..digits={digits}")
    share = {"train": 0.9, "valid": 0.05, "test": 0.05}[split]
    per_length = n / (digits - low + 1)
    if per_length > share * 10 ** (2 * low) / 2:
        raise ConfigError(f"cannot draw {n} distinct {low}-digit {split} problems; lower it")
    rng, seen, out = random.Random(f"{seed}:{split}"), set(), []
    while len(out) < n:
        d = rng.randint(low, digits)
        a, b = rng.randrange(10**d), rng.randrange(10**d)
        if (a, b, d) in seen or split_of(a, b) != split:
            continue
        seen.add((a, b, d))
        orders = [rng.randrange(variants) for _ in range(d)]
        text, completion = make_long_problem(a, b, d, orders)
        out.append(Prompt(text=text, reference=completion))
    return out


def completion_tokens(digits: int) -> int:
    """Characters (= char-tokenizer tokens) of a completion, without EOS."""
    return 10 * digits + 2


@register_task("long_arithmetic")
def long_arithmetic_task(
    digits: int = 8,
    variants: int = 4,
    num_train: int = 8000,
    num_eval: int = 200,
    seed: int = 0,
    eval_split: Split = "test",
    min_digits: int | None = None,
) -> Task:
    """Addition with ``digits``-digit operands (or ``min_digits..digits``, uniform per problem:
    outputs of several lengths) and a ``variants``-order scratchpad: ``num_train`` training
    problems and ``num_eval`` problems of ``eval_split`` (``valid`` for choices such as learning
    rates, ``test`` for reported numbers; the splits never overlap)."""
    if digits < 1 or num_train < 1 or num_eval < 1:
        raise ConfigError(
            f"long_arithmetic needs digits, num_train, num_eval >= 1; got "
            f"{digits}, {num_train}, {num_eval}"
        )
    if eval_split not in ("valid", "test"):
        raise ConfigError(f"eval_split={eval_split!r}; use 'valid' or 'test'")
    return Task(
        name="long_arithmetic",
        train_prompts=tuple(
            make_long_prompts(num_train, digits, variants, seed, "train", min_digits)
        ),
        eval_prompts=tuple(
            make_long_prompts(num_eval, digits, variants, seed + 1, eval_split, min_digits)
        ),
        score=exact_match,
        metric_name="exact_match",
        train_references=True,
    )

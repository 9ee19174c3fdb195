"""Multi-digit addition with a written scratchpad: a reasoning task where exposure bias matters.

A problem ``0347+0985=`` (operands zero-padded to ``digits`` digits) is answered column by column
from the right, each step writing ``a+b+carry=sum`` (sum on two digits), then ``#`` and the result
on ``digits + 1`` digits::

    0347+0985=7+5+0=12|4+8+1=13|3+9+1=13|0+0+1=01|#01332

A wrong carry early in the scratchpad derails every later step, so a student that only imitated gold
scratchpads (off-policy) meets states at test time it never trained on (its own mistakes).
The metric is exact match on the number after ``#``.
"""

from __future__ import annotations

import hashlib
import random

from onpolicy.errors import ConfigError
from onpolicy.tasks.base import Task, register_task
from onpolicy.types import Prompt

ALPHABET = "0123456789+=|#"
"""Every character the task's texts use (prompts and completions)."""


def make_problem(a: int, b: int, digits: int) -> tuple[str, str]:
    """``(prompt, gold_completion)`` for ``a + b``, both operands below ``10**digits``.

    >>> make_problem(47, 85, 3)
    ('047+085=', '7+5+0=12|4+8+1=13|0+0+1=01|#0132')
    """
    if not (0 <= a < 10**digits and 0 <= b < 10**digits):
        raise ConfigError(f"operands {a}, {b} do not fit in {digits} digits")
    sa, sb = f"{a:0{digits}d}", f"{b:0{digits}d}"
    steps, carry = [], 0
    for da, db in zip(reversed(sa), reversed(sb), strict=True):
        total = int(da) + int(db) + carry
        steps.append(f"{da}+{db}+{carry}={total:02d}")
        carry = total // 10
    answer = f"{a + b:0{digits + 1}d}"
    return f"{sa}+{sb}=", "|".join(steps) + "|#" + answer


def final_answer(text: str) -> str | None:
    """The digits after the last ``#`` in ``text`` (None without a ``#`` or a digit after it)."""
    if "#" not in text:
        return None
    tail = text.rsplit("#", 1)[1]
    digits = ""
    for ch in tail:
        if not ch.isdigit():
            break
        digits += ch
    return digits or None


def exact_match(completion: str, prompt: Prompt) -> float:
    """1.0 when the completion's final answer equals the reference's, as integers, else 0.0."""
    if prompt.reference is None:
        raise ConfigError("arithmetic exact_match needs prompts with a reference completion")
    got, want = final_answer(completion), final_answer(prompt.reference)
    return float(got is not None and want is not None and int(got) == int(want))


def is_held_out(a: int, b: int) -> bool:
    """The fixed train / held-out split: about 1 problem in 20 is held out, whatever the sizes or
    seeds asked for, so a held-out problem never appears in any training set (models included)."""
    digest = hashlib.blake2b(f"{a}+{b}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % 20 == 0


def make_prompts(n: int, digits: int, seed: int, held_out: bool = False) -> list[Prompt]:
    """``n`` distinct random problems from the training (or ``held_out``) side of the split, each a
    prompt text with its gold completion as ``reference``; seeded."""
    pool = 10 ** (2 * digits) // (20 if held_out else 1)
    if n > pool // 2:
        raise ConfigError(f"cannot draw {n} distinct {digits}-digit problems; lower the count")
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        a, b = rng.randrange(10**digits), rng.randrange(10**digits)
        if (a, b) in seen or is_held_out(a, b) != held_out:
            continue
        seen.add((a, b))
        text, gold = make_problem(a, b, digits)
        out.append(Prompt(text=text, reference=gold))
    return out


@register_task("arithmetic")
def arithmetic_task(
    digits: int = 4, num_train: int = 4000, num_eval: int = 200, seed: int = 0
) -> Task:
    """The addition task: ``num_train`` training and ``num_eval`` held-out problems (the split is
    fixed by ``is_held_out``, so the two sets never overlap)."""
    if digits < 1 or num_train < 1 or num_eval < 1:
        raise ConfigError(
            f"arithmetic needs digits, num_train, num_eval >= 1; got "
            f"{digits}, {num_train}, {num_eval}"
        )
    return Task(
        name="arithmetic",
        train_prompts=tuple(make_prompts(num_train, digits, seed)),
        eval_prompts=tuple(make_prompts(num_eval, digits, seed + 1, held_out=True)),
        score=exact_match,
        metric_name="exact_match",
        train_references=True,
    )

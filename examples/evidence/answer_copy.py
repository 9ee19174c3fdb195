"""Where a ``long_arithmetic`` student's exact match is lost: the column steps or the answer line.

    python examples/evidence/answer_copy.py MODEL_DIR... [--digits 6]

For each model folder, greedy completions of the task's 200 held-out (``test``) prompts, and:
``exact`` (the metric: the number after ``#`` is the sum), ``steps`` (every column step right:
``long_arithmetic.correct_steps``), ``copy`` (the written answer equals the one the completion's
own step totals imply, right or wrong: the answer line read back from the scratchpad) and
``exact | steps`` (exact match among completions whose steps are all right). A student with
``steps`` high and ``copy`` low does the arithmetic and loses the answer in the read-back.
"""

from __future__ import annotations

import argparse
import json

from onpolicy.models import load_model
from onpolicy.tasks.arith_models import char_tokenizer
from onpolicy.tasks.long_arithmetic import correct_steps, long_arithmetic_task, parse_scratchpad
from onpolicy.tasks.long_models import max_new_tokens
from onpolicy.tasks.supervised import complete_prompts


def implied_answer(completion: str) -> str | None:
    """The answer line a completion's own steps imply: the last step's carry, then each step's
    units digit from the last step to the first; None when the scratchpad is malformed.

    >>> implied_answer("0+8+6=14|1+9+2=12|5+8+1=14|3+3+1=07|0+1+4=05|0+2+0=02|#0257424")
    '0257424'
    """
    steps = parse_scratchpad(completion)
    if not steps:
        return None
    return str(steps[-1][3] // 10) + "".join(str(t % 10) for *_, t in reversed(steps))


def written_answer(completion: str) -> str:
    """The text after ``|#`` (empty when absent)."""
    return completion.split("|#", 1)[1].strip() if "|#" in completion else ""


def measure(model, tok, prompts, digits: int, score) -> dict:
    """The four shares above over ``prompts`` (``score``: the task's per-completion metric)."""
    texts = complete_prompts(model, tok, list(prompts), max_new_tokens(digits))
    exact = [bool(score(t, p)) for t, p in zip(texts, prompts, strict=True)]
    steps = [correct_steps(t, p) >= digits for t, p in zip(texts, prompts, strict=True)]
    copy = [implied_answer(t) == written_answer(t) for t in texts]
    right_steps = [e for e, s in zip(exact, steps, strict=True) if s]
    n = len(texts)
    return {
        "exact": sum(exact) / n,
        "steps": sum(steps) / n,
        "copy": sum(copy) / n,
        "exact | steps": sum(right_steps) / len(right_steps) if right_steps else None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--digits", type=int, default=6)
    a = p.parse_args(argv)
    tok = char_tokenizer()
    task = long_arithmetic_task(digits=a.digits, variants=4, num_train=8000, num_eval=200, seed=0)
    prompts = list(task.eval_prompts)

    def score(text, prompt):
        return task.mean_score([text], [prompt])

    for folder in a.models:
        row = measure(load_model(folder).eval(), tok, prompts, a.digits, score)
        print(json.dumps({"model": folder, **{k: v and round(v, 3) for k, v in row.items()}}))


if __name__ == "__main__":
    main()

"""Write the example's data: reverse a made-up word (a task the tiny models have never seen).

    python examples/own_task/make_data.py      # -> examples/own_task/data/{train,eval}.jsonl

One row per line in the project's data format (``onpolicy.data``): a plain-text ``prompt`` and
its gold ``completion``. The words are random letter strings, so the eval words are new.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent


def make_rows(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, str]]:
    """``n`` distinct words of 3-4 letters (none in ``exclude``), each with its reversal."""
    rng = random.Random(seed)
    words: list[str] = []
    while len(words) < n:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 4)))
        if word not in exclude and word not in words:
            words.append(word)
    return [{"prompt": f"reverse {w}:", "completion": f" {w[::-1]}"} for w in words]


def main() -> None:
    train = make_rows(2000, seed=0)
    held_out = make_rows(50, seed=1, exclude={r["prompt"].split()[1].rstrip(":") for r in train})
    (HERE / "data").mkdir(exist_ok=True)
    for name, rows in (("train", train), ("eval", held_out)):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (HERE / "data" / f"{name}.jsonl").write_text(text)
    print(f"wrote {len(train)} train and {len(held_out)} eval rows to {HERE / 'data'}")


if __name__ == "__main__":
    main()

"""Quickstart (``make demo``): on-policy distillation against its SFT baseline, from nothing.

On the built-in arithmetic task (3-digit addition with a written scratchpad):
1. trains the teacher (a small Llama, supervised on gold scratchpads) and a smaller student
   (pre-trained briefly, so it is partly right), cached under ``.cache/onpolicy`` after a first run;
2. from the same student, trains SFT on teacher samples (off-policy) and on-policy reverse KL with
   the same optimizer, optimizer steps and prompts per step, over two seeds in parallel;
3. prints the before/after table and where the report (Markdown, JSON) and the plot were written.

Run: ``python examples/quickstart.py`` (options: ``train.steps=100 seeds=[0,1,2]``, see
``configs/compare/quickstart.yaml``).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    from onpolicy.compare import quickstart_main

    start = time.perf_counter()
    code = quickstart_main(sys.argv[1:])
    print(f"quickstart finished in {time.perf_counter() - start:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())

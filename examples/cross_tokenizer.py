"""Cross-tokenizer distillation (configs/cross_tokenizer.yaml): a character-level student learns
from a byte-level BPE teacher; each renders the prompt with its own chat template, and the alignment
layer compares their next-byte distributions at every byte (``next_byte``; ``objective.name=gold``
or ``uld`` for the span-distribution losses).

Metrics are per UTF-8 byte (tokenizer-independent): ``eval/teacher_nll_per_byte`` and
``eval/logratio_per_byte``; ``eval/alignment_coverage`` is the share of student tokens inside
aligned spans.

    python examples/cross_tokenizer.py [objective.name=uld ...]

With hidden-state distillation across tokenizers (``onpolicy.hidden.cross``): the student's and
the teacher's intermediate states compared at the ends of aligned spans, through a trained map:

    python examples/cross_tokenizer.py hidden.weight=0.5 hidden.loss=cosine
"""

from _common import run_recipe

if __name__ == "__main__":
    run_recipe("cross_tokenizer")

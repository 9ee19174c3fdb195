"""What a cross-tokenizer teacher reads per student completion token, for the FLOPs plan.

A cross-tokenizer teacher scores (and samples) the completion in *its own* tokens: the student's
completion bytes tokenized by the teacher, plus its end of turn when the student stopped
(``alignment.teacher_view``, what ``onpolicy.teacher.cross.score_cross`` feeds the teacher and the
trainer's ``ComputeBudget.teacher_tokens`` counts). The plan (``budget.py``) knows the completion
length ``C`` in student tokens, so it charges the teacher ``q C`` completion positions, with

    q = sum_r (teacher completion tokens of r + 1) / sum_r (student tokens of r + 1)

over the training prompts' reference completions ``r`` (the first ``MAX_REFERENCES``; each ``+ 1``
is the stop token, one token on either side). ``q`` is about 2 for a char-level teacher of a BPE
student and about 0.5 the other way; 1.0 for the same tokenizer (never measured: the teacher reads
the student's own tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onpolicy.types import Prompt

MAX_REFERENCES = 400  # reference completions enough for a stable ratio (as hidden_cost's)


def teacher_tokens_per_token(
    student_tokenizer: Any, teacher_tokenizer: Any, prompts: Sequence[Prompt]
) -> float:
    """``q`` of the module docstring; 1.0 when no prompt has a reference (no measurement)."""
    from alignment import teacher_view
    from alignment.tokens.chat import turn_end_id

    stop = turn_end_id(student_tokenizer)
    refs = [p.reference for p in prompts if p.reference][:MAX_REFERENCES]
    student, teacher = 0, 0
    for text in refs:
        ids = student_tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = [*ids, stop] if stop is not None else ids
        view = teacher_view((), ids, student_tokenizer, teacher_tokenizer)
        student += len(ids)
        teacher += int(view.teacher_input_ids_T.numel())  # no prompt: the completion only
    return teacher / student if student else 1.0

"""A task reward for configs/pg_task_reward.yaml: ``(completion_text, prompt) -> float``.

1.0 when the last number in the completion is the reference's last number (the row's gold
``completion``, e.g. "4 plus 9 is 13." -> 13), else 0.0; prompts without a number in their
reference score 0.
"""

import re


def last_number_matches(text, prompt):
    want = re.findall(r"\d+", prompt.reference or "")
    got = re.findall(r"\d+", text)
    return float(bool(want) and bool(got) and got[-1] == want[-1])

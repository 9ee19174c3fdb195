"""The compare harness's tiny arithmetic setting, shared by its end-to-end tests: a 2-digit task
and models small enough to build in seconds (cached under the test's ``ONPOLICY_CACHE``)."""

from __future__ import annotations

TINY_TASK = {"name": "arithmetic", "digits": 2, "num_train": 60, "num_eval": 6}
TINY_MODELS = {
    "kind": "arithmetic",
    "num_train": 200,
    "teacher_steps": 20,
    "student_steps": 5,
    "batch_size": 16,
    "teacher": {"layers": 1, "heads": 1, "ffn": 64},
    "student": {"layers": 1, "heads": 1, "ffn": 32},
}

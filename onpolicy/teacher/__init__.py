"""Teachers: what they return (``TeacherScores``, one of five typed variants) and the local
transformers teacher.

``LocalTeacher`` (``onpolicy.teacher.local``) scores same-tokenizer rollouts with logits
(``DenseScores``), hidden states + head (``HiddenScores``) or top-k (``TopKScores``), and
cross-tokenizer rollouts through ``onpolicy.teacher.cross`` (``CrossScores``); the vLLM teacher
(engine or server: ``TopKScores``, or ``TokenScores`` with ``top_k=0``) lives in
``onpolicy.teacher.vllm_teacher``; ``backends`` builds either from a config block
(``teacher.backend``), ``routing`` runs several (``teachers:``).
"""

from onpolicy.teacher.types import (
    CrossScores,
    CrossTeacherScores,
    DenseScores,
    HiddenScores,
    TeacherScores,
    TokenScores,
    TopKScores,
)

__all__ = [
    "CrossScores",
    "CrossTeacherScores",
    "DenseScores",
    "HiddenScores",
    "TeacherScores",
    "TokenScores",
    "TopKScores",
]

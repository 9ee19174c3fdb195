"""Teachers: what they return (``TeacherScores``) and the local transformers teacher.

``LocalTeacher`` (``onpolicy.teacher.local``) scores same-tokenizer rollouts with logits, hidden
states or top-k, and cross-tokenizer rollouts through ``onpolicy.teacher.cross``; the vLLM teacher
(engine or server, top-k) lives in ``onpolicy.teacher.vllm_teacher``; ``backends`` builds either
from a config block (``teacher.backend``), ``routing`` runs several (``teachers:``).
"""

from onpolicy.teacher.types import CrossTeacherScores, TeacherScores

__all__ = ["CrossTeacherScores", "TeacherScores"]

"""Built-in tasks (``arithmetic``, ``long_arithmetic``, ``chat_pair``) and the user's own
(``dataset``)."""

from onpolicy.tasks import arithmetic, dataset, long_arithmetic  # noqa: F401  (registers them)
from onpolicy.tasks.base import TASKS, Task, make_task, register_task

__all__ = ["TASKS", "Task", "make_task", "register_task"]

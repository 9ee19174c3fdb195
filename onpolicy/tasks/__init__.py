"""Built-in tasks (``arithmetic``, ``chat_pair``) and the user's own (``dataset``)."""

from onpolicy.tasks import arithmetic, dataset  # noqa: F401  (register the built-ins)
from onpolicy.tasks.base import TASKS, Task, make_task, register_task

__all__ = ["TASKS", "Task", "make_task", "register_task"]

"""Tasks: an environment, its reward and termination as compiled functions, and facts about them.

``task.py`` holds the Task type and the registry, ``builtin.py`` the built-in tasks' rewards.
"""
from fastmbrl.tasks import builtin  # noqa: F401  (registers the built-in tasks)
from fastmbrl.tasks.builtin import *  # noqa: F401,F403  (the reward functions)
from fastmbrl.tasks.task import (Task, get_task, import_tasks, list_tasks, register_task,
                                 task_source)

__all__ = ["Task", "register_task", "get_task", "list_tasks", "import_tasks", "task_source"]

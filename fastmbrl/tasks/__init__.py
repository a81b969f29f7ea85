"""Tasks: an environment, its reward and termination as compiled functions, and facts about them."""
from fastmbrl.tasks.builtin import *  # noqa: F401,F403
from fastmbrl.tasks.builtin import (GENERIC_DEFAULTS, Task, _REGISTRY, get_task, list_tasks,  # noqa: F401
                                    register_task, pendulum_reward)

"""Benchmark tasks. Each task is one module in this package defining a :class:`Task` subclass.

Tasks are discovered by scanning the package, so adding a task touches only its own module
(see :mod:`cellc.tasks.base` for the interface).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from cellc.errors import UsageError, did_you_mean
from cellc.tasks.base import Batch, RecurrentNetwork, Sequence, Task, TaskData

__all__ = ["Batch", "RecurrentNetwork", "Sequence", "Task", "TaskData", "task_classes", "get_task"]

_NOT_TASK_MODULES = {"base"}


def task_classes() -> dict[str, type[Task]]:
    """All tasks by CLI name, in a stable (alphabetical) order."""
    found: dict[str, type[Task]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_TASK_MODULES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Task)
                and value is not Task
                and value.__module__ == module.__name__
                and getattr(value, "name", None)
            ):
                found[value.name] = value
    return dict(sorted(found.items()))


def get_task(name: str, data_dir: str | Path | None = None) -> Task:
    """An instance of the task called ``name`` (raises UsageError naming the known tasks)."""
    classes = task_classes()
    if name not in classes:
        raise UsageError(f"unknown task {name!r}{did_you_mean(name, list(classes))}; known tasks: "
                         f"{', '.join(classes) or 'none'}")
    return classes[name](data_dir)

"""The built-in tasks by name, and `get_task` (the task with its sizes)."""

from __future__ import annotations

from typing import Any

from llada.errors import UserError
from llada.tasks.addition import Addition
from llada.tasks.base import ReasoningTask
from llada.tasks.countdown import Countdown
from llada.tasks.path import Path
from llada.tasks.sudoku import Sudoku

TASKS: dict[str, type[ReasoningTask]] = {t.name: t for t in (Addition, Sudoku, Countdown, Path)}


def get_task(name: str, **sizes: Any) -> ReasoningTask:
    """The task `name` with `sizes` as its config knobs (`get_task("addition", max_digits=3)`).

    Raises a one-line UserError for an unknown name, an unknown knob or a bad value.
    """
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name].sized(**sizes)

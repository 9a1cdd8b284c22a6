"""Built-in reasoning tasks where the order of decoding matters, each verifiable by a program.

    addition    "37+45=" -> "82"                                   operands' digits
    sudoku      "1000301200034001=" -> "1234341221434321"           4x4 or 9x9, blanks; one solution each
    countdown   "3,5,7->26=" -> "3*7+5"                              how many numbers, their range, targets
    path        "3-1,1-0,0-2,3-4,4-2,1-5 3>2=" -> "3-4-2"            nodes, extra edges, distance

    from llada.tasks import get_task
    task = get_task("sudoku", size=9)
    items = task.items("test", n=300)                # held out: never a training problem
    task.reward(items[0], response)                  # 1.0 when verified, else 0.0
    llada.tasks.evaluate(bundle, task, n=300)        # sampled answers: accuracy ± SE, per position

As data, a task is the source `task:NAME[:knob=value,...]` of `llada sft --data` and `llada train
--data` (sources.py); its test split stays out of training, for `evaluate` and the lm-eval tasks
(llada/evaluation/tasks/<name>/, hooks in harness.py).

The package, by file: base.py (`TaskItem`, `TaskConfig`, `ReasoningTask`: split, scores, data
forms), one module per task, registry.py (`TASKS`, `get_task`), sources.py (`task:` data sources),
harness.py (lm-eval hooks), scoring.py (`evaluate`, which loads the sampler: imported on first use).
"""

from __future__ import annotations

from typing import Any

from llada.tasks.base import ReasoningTask, TaskConfig, TaskItem
from llada.tasks.registry import TASKS, get_task
from llada.tasks.sources import (
    DEFAULT_ITEMS,
    SOURCE_PREFIX,
    VALIDATION_ITEMS,
    is_source,
    parse_source,
    source_conversations,
    source_items,
    source_texts,
)

__all__ = ["DEFAULT_ITEMS", "SOURCE_PREFIX", "TASKS", "VALIDATION_ITEMS", "ReasoningTask", "TaskConfig", "TaskItem",
           "evaluate", "get_task", "is_source", "parse_source", "source_conversations", "source_items",
           "source_texts"]


def __getattr__(name: str) -> Any:
    # `evaluate` samples with the model: loaded on first use, so the tasks stay light to import
    if name == "evaluate":
        from llada.tasks.scoring import evaluate

        return evaluate
    raise AttributeError(f"module 'llada.tasks' has no attribute {name!r}")

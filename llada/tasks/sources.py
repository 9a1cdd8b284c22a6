"""A built-in task as a data source: `task:NAME[:knob=value,...]` for `llada sft --data` and `llada
train --data` (`llada.data.sft.load_conversations`, `llada.data.pretrain.load_texts`).

"train" is the first n training-split problems (n= in the source, default `DEFAULT_ITEMS`);
"validation" the next n // 10 of the training split (1 to `VALIDATION_ITEMS`), which the run
does not train on. The test split is never loaded: it is what `evaluate` and the lm-eval tasks score.
"""

from __future__ import annotations

from typing import Any

from llada.errors import UserError
from llada.tasks.base import ReasoningTask, TaskItem
from llada.tasks.registry import get_task

SOURCE_PREFIX = "task:"  # a data source naming a built-in task: task:NAME[:knob=value,...]
DEFAULT_ITEMS = 5000  # training problems of a task source without n=
VALIDATION_ITEMS = 200  # the most held-out training-split problems of a task source's validation split


def is_source(source: str | None) -> bool:
    """Whether a data source names a built-in task (`task:NAME...`)."""
    return isinstance(source, str) and source.startswith(SOURCE_PREFIX)


def _value(text: str) -> Any:
    """A knob's value from text: true/false, an int, a float, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_source(source: str) -> tuple[ReasoningTask, int]:
    """(task, training problems) of `task:NAME[:knob=value,...]`; n= sets the count. UserError when bad."""
    name, _, knobs = source[len(SOURCE_PREFIX):].partition(":")
    sizes: dict[str, Any] = {}
    for part in filter(None, knobs.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise UserError(f"{source!r}: {part!r} is not knob=value; write task:NAME:knob=value,knob=value")
        sizes[key.strip()] = _value(value.strip())
    n = sizes.pop("n", DEFAULT_ITEMS)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"{source!r}: n must be a whole number >= 1, got {n!r}")
    return get_task(name, **sizes), n


def source_items(source: str, split: str = "train", seed: int = 0) -> tuple[ReasoningTask, list[TaskItem]]:
    """The task of a `task:` source and its items for a data split: "train" the first n training-split
    problems, "validation" the next n // 10 (1 to VALIDATION_ITEMS; never trained on). The test split
    is never used."""
    task, n = parse_source(source)
    if split not in ("train", "validation"):
        raise UserError(f"split must be 'train' or 'validation', got {split!r}")
    items = task.items("train", n + min(VALIDATION_ITEMS, max(1, n // 10)), seed)
    return task, items[:n] if split == "train" else items[n:]


def source_conversations(source: str, split: str = "train", seed: int = 0) -> list[list[dict[str, str]]]:
    """A `task:` source as SFT conversations (one user turn, one assistant turn each)."""
    task, items = source_items(source, split, seed)
    return [task.conversation(it) for it in items]


def source_texts(source: str, split: str = "train", seed: int = 0) -> list[str]:
    """A `task:` source as pretraining documents, one problem and its answer each ("37+45=82")."""
    task, items = source_items(source, split, seed)
    return [task.text(it) for it in items]

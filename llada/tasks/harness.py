"""The lm-eval side of the built-in tasks: the test split as a dataset, and the verifier as metrics.

Each task has a YAML and a thin utils.py under llada/evaluation/tasks/<name>/ (lm-eval task
`llada_<name>`, tag `llada_reasoning`) that call these two functions. lm-eval hands a task's
`--metadata` to `custom_dataset`: the keys that are the task's size knobs size it, `n` (default
`DEFAULT_N`) and `seed` (default 0) choose the test problems, and other keys (lm-eval's own
`version`, another task's settings) are left alone.

    llada lm-eval --model llada --model_args pretrained=DIR --include_path llada/evaluation/tasks \\
        --tasks llada_addition --apply_chat_template --metadata '{"n": 300}'

Metrics per answer: `acc` the reward (the verifier's 1.0 or 0.0), `exact` equal to the reference,
`positions` the share of the reference's positions the answer has right.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from llada.tasks.base import TaskItem
from llada.tasks.registry import TASKS, get_task

DEFAULT_N = 300  # test problems an lm-eval run scores without --metadata n=...


def lm_eval_dataset(name: str, **metadata: Any) -> Any:
    """A datasets.DatasetDict with one split "test": the task's first n test problems (prompt,
    answer, and the problem data as JSON for the verifier)."""
    import datasets

    knobs = {f.name for f in fields(TASKS[name].config_class)}
    task = get_task(name, **{k: v for k, v in metadata.items() if k in knobs})
    items = task.items("test", metadata.get("n", DEFAULT_N), metadata.get("seed", 0))
    rows = [{"prompt": it.prompt, "answer": it.answer, "problem": json.dumps(it.problem)} for it in items]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def lm_eval_results(name: str, doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval process_results: acc (verified), exact and positions of one generated answer."""
    task = TASKS[name]()  # the verifier reads the item alone, not the sizes
    item = TaskItem(doc["prompt"], doc["answer"], json.loads(doc["problem"]))
    response = results[0] if results else ""
    scores = task.position_scores(item, response)
    return {"acc": task.reward(item, response), "exact": float(task.exact(item, response)),
            "positions": sum(scores) / len(scores) if scores else 0.0}

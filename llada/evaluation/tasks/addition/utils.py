"""lm-eval hooks for the llada_addition task; the logic lives in llada.tasks.harness."""

from __future__ import annotations

from typing import Any

from llada.tasks.harness import lm_eval_dataset, lm_eval_results


def dataset(**metadata: Any) -> Any:
    """The task's test problems; sizes, n and seed from lm-eval's --metadata."""
    return lm_eval_dataset("addition", **metadata)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return lm_eval_results("addition", doc, results)

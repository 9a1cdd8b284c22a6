"""lm-eval hooks for the reversal_poem tasks; the logic lives in llada.evaluation.poem."""

from __future__ import annotations

from typing import Any

from llada.evaluation.poem import lm_eval_dataset, lm_eval_results


def forward_dataset(**kwargs: Any) -> Any:
    """Items asking for the next line; the file comes from --metadata poem_data=... or $LLADA_POEM_DATA."""
    return lm_eval_dataset("forward", **kwargs)


def reverse_dataset(**kwargs: Any) -> Any:
    """Items asking for the previous line."""
    return lm_eval_dataset("reverse", **kwargs)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return lm_eval_results(doc, results)

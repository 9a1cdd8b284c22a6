"""Measurement pieces the claims share: the sampler setting, one built-in task run on one model,
and example lines for a report."""

from __future__ import annotations

from typing import Any

from llada.data.world import World
from llada.evaluation.builtin import TaskResult, run_task
from llada.recipe import SAMPLER
from llada.reproduce.models import ModelName, Models
from llada.sampling.options import SamplerOptions

MC_NUM = 32  # Monte-Carlo samples per option when a task is also scored by multiple choice (Eq. 6)


def setting(**changes: Any) -> SamplerOptions:
    """The recipes' sampler (`llada.recipe.SAMPLER`) with `changes`."""
    return SAMPLER.replace(**changes)


def score(models: Models, name: ModelName, task: str, options: SamplerOptions | None = None, *,
          choice: bool = False) -> TaskResult:
    """Model `name` (made ready beforehand) on the built-in `task` of the models' world, sampled
    with `options` (default: `setting()`); `choice` also scores it by multiple choice."""
    return run_task(models.load(name), task, options or setting(), World(models.seed, models.recipe.world),
                    choice=choice, name=name, mc_num=MC_NUM)


def examples(result: TaskResult, label: str, k: int = 3) -> list[str]:
    """The first `k` examples of `result` as report lines: "label: prompt → response (expected answer)"."""
    return [f"{label}: {ex['prompt']!r} → {ex['response']!r} (expected {ex['answer']!r})"
            for ex in result.examples[:k]]

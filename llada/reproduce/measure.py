"""Measurement pieces the claims share: the sampler setting, one built-in task run on one model,
a reasoning task's items answered with the step each answer position was unmasked at, and example
lines for a report."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from llada.data.world import World
from llada.evaluation.builtin import TaskResult, run_task
from llada.recipe import SAMPLER
from llada.reproduce.models import ModelName, Models
from llada.sampling import StepState, encode_prompts, sample_steps
from llada.sampling.options import SamplerOptions
from llada.sampling.text import decode_response
from llada.tasks import TaskItem

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


def unmask_steps(states: Iterable[StepState]) -> torch.Tensor:
    """The step (1 = the first) at which each response position was unmasked, (B, gen_length) long,
    from `sample_steps`' states (0 where a position was never unmasked). The canvas is not read:
    only each state's `transferred` and `step`."""
    steps: torch.Tensor | None = None
    for state in states:
        moved = state.transferred[:, state.prompt_length:]  # (B, gen_length)
        if steps is None:
            steps = torch.zeros(moved.shape, dtype=torch.long)
        steps[moved.cpu()] = state.step + 1
    if steps is None:
        raise ValueError("no sampler states: sample_steps yields at least the final one")
    return steps


def answer_items(bundle: Any, items: list[TaskItem], options: SamplerOptions,
                 batch_size: int = 100) -> tuple[list[str], torch.Tensor]:
    """Each item's prompt answered by `bundle` (a loaded model) with `options`, as one user turn of
    the chat template (as `llada sft --data task:NAME` trains): the responses, decoded up to their
    first EOS / end-of-turn, and `unmask_steps` (N, gen_length)."""
    model, tok = bundle.model, bundle.tokenizer
    responses: list[str] = []
    order = []
    for start in range(0, len(items), batch_size):
        ids, mask = encode_prompts(tok, [it.prompt for it in items[start:start + batch_size]],
                                   pad_id=model.config.roles.pad)
        states = []
        for state in sample_steps(model, ids, options, attention_mask=mask):
            states.append(StepState(state.canvas, state.transferred.clone(), state.block, state.step,
                                    state.prompt_length, final=state.final))
        canvas = state.canvas[:, state.prompt_length:].cpu()  # the final state's canvas: the output
        responses += [decode_response(tok, row, model.config.roles.stops) for row in canvas]
        order.append(unmask_steps(states))
    return responses, torch.cat(order)

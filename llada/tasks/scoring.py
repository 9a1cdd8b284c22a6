"""A model on a task's held-out problems: sampled answers, verified, with standard errors.

    import llada
    from llada.tasks import evaluate
    scores = evaluate(llada.load("runs/addition/model"), "addition", n=300, gen_length=8, steps=8)
    print(scores.accuracy, scores.positions)      # accepted share ± SE; the share right at each answer position

Answers come from `llada.sampling.sample_text` (the model's sampler: the reverse process, or left
to right for an autoregressive baseline), with the prompt as one user turn of the chat template as
`llada sft --data task:NAME` trains it (chat=False: BOS and the prompt, as a `task:` pretraining
text has it). The standard errors are `llada.stats.Accuracy`'s, sqrt(p (1 - p) / n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llada.checkpoint import Bundle
from llada.sampling import SamplerOptions, sample_text
from llada.stats import Accuracy
from llada.tasks.base import ReasoningTask
from llada.tasks.registry import get_task


@dataclass
class TaskScores:
    """What `evaluate` measured on n held-out problems."""

    task: str
    accuracy: Accuracy  # answers the verifier accepts (the reward)
    exact: Accuracy  # answers equal to the reference answer
    positions: list[float]  # share right at each reference position, over the items that have it
    records: list[dict[str, Any]] = field(default_factory=list)  # prompt, answer, response, reward per item

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "accuracy": self.accuracy.to_dict(), "exact": self.exact.to_dict(),
                "positions": self.positions, "records": self.records}


def position_accuracy(scores: list[list[bool]]) -> list[float]:
    """Per position: the share of True over the rows long enough to have that position."""
    width = max(map(len, scores), default=0)
    out = []
    for i in range(width):
        column = [row[i] for row in scores if i < len(row)]
        out.append(sum(column) / len(column))
    return out


def evaluate(bundle: Bundle, task: ReasoningTask | str, n: int = 300, options: SamplerOptions | None = None, *,
             seed: int = 0, chat: bool = True, batch_size: int = 32, **overrides: Any) -> TaskScores:
    """Sample an answer to each of the first `n` test problems of `task` (drawn with `seed`) and score them.

    bundle: a loaded model (`llada.load`); task: a ReasoningTask or a task name (default sizes);
    options / overrides: the sampler settings (default the bundle's recommended ones), as for
    `sample_text`. Raises UserError for an unknown task or a split with fewer than n problems.
    """
    task = get_task(task) if isinstance(task, str) else task
    items = task.items("test", n, seed)
    options = options if options is not None else bundle.options
    responses: list[str] = []
    for start in range(0, len(items), batch_size):
        prompts = [it.prompt for it in items[start:start + batch_size]]
        responses += sample_text(bundle.model, bundle.tokenizer, prompts, options, chat=chat, **overrides)
    rewards = [task.reward(it, r) for it, r in zip(items, responses, strict=True)]
    records = [{"prompt": it.prompt, "answer": it.answer, "response": r, "reward": w}
               for it, r, w in zip(items, responses, rewards, strict=True)]
    return TaskScores(task.name, Accuracy.of([w == 1.0 for w in rewards]),
                      Accuracy.of([task.exact(it, r) for it, r in zip(items, responses, strict=True)]),
                      position_accuracy([task.position_scores(it, r) for it, r in zip(items, responses, strict=True)]),
                      records)

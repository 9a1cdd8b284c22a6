"""`llada reproduce planning`: a diffusion model against its autoregressive baseline on tasks whose
answers need planning (sudoku, countdown), at equal training budgets.

Not a claim of the LLaDA paper: Ye et al. 2025 ("Beyond Autoregression: Discrete Diffusion for
Complex Reasoning and Planning") report that small masked diffusion models solve sudoku and
countdown where AR models of the same size do not, because an AR model must commit to the first
cell or operand before it has seen what the rest of the answer demands.

Measurement: for each planning task of the recipe (`Recipe.planning`), a diffusion model (Eq. 5)
and an AR model (the next-token loss) are fine-tuned from scratch on the same training split with
the same budget (`llada.recipe.train_task_recipe`: model size, steps, batch, lr and warm-up equal;
only the loss and the attention mask differ). Both answer the same `eval_items` held-out problems
greedily: the diffusion model in one block, one token per step, with low-confidence remasking
(gen_length = the longest reference answer + the stop token), the AR model left to right. The
task's verifier scores each answer (countdown accepts any expression that reaches the target with
the given numbers, not only the reference one).

Verdict (fixed before the default size was measured): the claim holds when diffusion − AR exceeds
two paired standard errors (`exceeds_two_se`) on every planning task of the recipe, and does not
hold otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llada.recipe import TaskRecipe
from llada.reproduce.base import Claim, Report
from llada.reproduce.models import Models, Objective
from llada.stats import exceeds_two_se, paired_difference
from llada.tasks import parse_source
from llada.tasks.scoring import TaskScores, evaluate

OBJECTIVES: tuple[Objective, ...] = ("diffusion", "ar")

STATEMENT = ("On tasks whose answers need planning (sudoku, countdown), a masked diffusion model beats an "
             "autoregressive model trained with the same budget.")
PAPER = ("Not in the LLaDA paper. Ye et al. 2025 (\"Beyond Autoregression\"): a small masked diffusion model "
         "solves sudoku and countdown far more often than AR models of its size.")


@dataclass
class Measured:
    """Per planning task: the task recipe, the generation length, and each objective's scores."""

    tasks: list[TaskRecipe]
    gen: dict[str, int] = field(default_factory=dict)
    scores: dict[tuple[str, str], TaskScores] = field(default_factory=dict)
    """(task name, objective) -> the scores on the task's held-out problems"""

    def hits(self, task: str, objective: str) -> list[bool]:
        """Per held-out problem: whether the verifier accepted `objective`'s answer."""
        return [r["reward"] == 1.0 for r in self.scores[task, objective].records]


def measure(models: Models) -> Measured:
    m = Measured(list(models.recipe.planning))
    for recipe in m.tasks:
        task, _ = parse_source(recipe.source)
        items = task.items("test", recipe.eval_items, models.seed)
        gen = m.gen[recipe.task] = max(len(it.answer) for it in items) + 1  # + the stop token
        for objective in OBJECTIVES:
            bundle = models.load_task(objective, recipe)
            m.scores[recipe.task, objective] = evaluate(
                bundle, task, n=recipe.eval_items, seed=models.seed, gen_length=gen, block_length=gen, steps=gen,
                remasking="low_confidence", temperature=0.0)
    return m


def differences(m: Measured) -> dict[str, tuple[float, float]]:
    """Per task: diffusion − AR accuracy over the same problems, and its paired standard error."""
    return {r.task: paired_difference(m.hits(r.task, "diffusion"), m.hits(r.task, "ar")) for r in m.tasks}


def verdict_of(diffs: dict[str, tuple[float, float]]) -> bool:
    """Held: diffusion − AR exceeds two paired SE on every task; False when there is no task."""
    return bool(diffs) and all(exceeds_two_se(d, se) for d, se in diffs.values())


def judge(m: Measured) -> Report:
    diffs = differences(m)
    held = verdict_of(diffs)
    results: dict[str, Any] = {}
    for r in m.tasks:
        for objective in OBJECTIVES:
            s = m.scores[r.task, objective]
            results[f"{r.task}/{objective}"] = {"accuracy": s.accuracy.to_dict(), "exact": s.exact.to_dict(),
                                                "positions": s.positions}
        results[f"{r.task}/diffusion-ar"] = dict(zip(("difference", "stderr"), diffs[r.task], strict=True))
    table = [["task", "diffusion", "AR", "diffusion − AR", "training (each model)"]]
    for r in m.tasks:
        d, se = diffs[r.task]
        table.append([f"{r.task} ({r.sizes or 'default sizes'})", str(m.scores[r.task, "diffusion"].accuracy),
                      str(m.scores[r.task, "ar"].accuracy), f"{d:+.3f} ± {se:.3f}",
                      f"{r.steps} steps × {r.batch_size}, lr {r.lr:g}"])
    diff_text = "; ".join(f"{t} {d:+.3f} ± {se:.3f}" for t, (d, se) in diffs.items())
    verdict = (f"{'Held' if held else 'Did not hold'} by the rule fixed beforehand (diffusion − AR > 2 paired SE "
               f"on every task): {diff_text}.")
    ours = "; ".join(f"{r.task}: diffusion {m.scores[r.task, 'diffusion'].accuracy}, AR {m.scores[r.task, 'ar'].accuracy}"
                     for r in m.tasks) + " (held-out problems of our tasks)"
    notes = ["Each pair of models was fine-tuned from scratch on the task's training split with the same budget; "
             "the held-out problems are never training problems (a sudoku's whole solution grid is held out). "
             "How many steps each objective needs to reach 50% and 90% on these tasks is in BENCHMARKS.md "
             "(\"Steps to learn a reasoning task\"): a claim at one budget is one point of those curves.", "",
             *unlearned(m), "",
             "**Per answer position** (the share of held-out answers right at each position of the reference "
             "answer: a sudoku's cells row by row, a countdown expression's characters):", "",
             *position_lines(m)]
    examples = [f"{r.task}, {objective}: {rec['prompt']} → {rec['response']!r} (reference {rec['answer']!r}, "
                f"{'accepted' if rec['reward'] == 1.0 else 'rejected'})"
                for r in m.tasks for objective in OBJECTIVES for rec in m.scores[r.task, objective].records[:2]]
    return Report("planning", STATEMENT, PAPER, ours, held, verdict, table, results, notes=notes, examples=examples,
                  recipe="Recipe: " + "; ".join(r.describe(" --objective diffusion|ar") for r in m.tasks) + ".")


def unlearned(m: Measured) -> list[str]:
    """A line per task that neither model learned to 90% in its budget: what the verdict there rests on."""
    lines = []
    for r in m.tasks:
        best = max(m.scores[r.task, o].accuracy.value for o in OBJECTIVES)
        if best < 0.9:
            lines.append(f"Neither model learned {r.task} in {r.steps} steps (the better one solved {best:.0%}): the "
                         "difference there is between two unfinished models, not a verdict on what either objective "
                         "can learn; `--size large` trains the small preset longer on more problems, for a GPU.")
    return lines


def position_lines(m: Measured) -> list[str]:
    """Markdown lines: per task and objective, the share right at each answer position."""
    lines = []
    for r in m.tasks:
        for objective in OBJECTIVES:
            shares = " ".join(f"{p:.2f}" for p in m.scores[r.task, objective].positions)
            lines.append(f"- {r.task}, {objective}: {shares}")
    return lines


def plot(m: Measured, ax: Any) -> None:
    """Accuracy per task, diffusion beside AR, with standard errors."""
    width = 0.38
    for i, objective in enumerate(OBJECTIVES):
        accs = [m.scores[r.task, objective].accuracy for r in m.tasks]
        xs = [k + (i - 0.5) * width for k in range(len(m.tasks))]
        ax.bar(xs, [a.value for a in accs], width, yerr=[a.stderr for a in accs], capsize=4, label=objective)
    ax.set_xticks(range(len(m.tasks)), [r.task for r in m.tasks])
    ax.set_ylabel("held-out problems solved")
    ax.set_ylim(0, 1.05)
    ax.legend()


CLAIM = Claim("planning", ("diffusion-planning", "ar-planning"), measure, judge, plot)

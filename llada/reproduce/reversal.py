"""`llada reproduce reversal`: diffusion vs AR on fact questions asked forward and in reverse (Table 4).

Measurement: the SFT diffusion model and its AR baseline answer, by generation with the recipes'
sampler, the world's forward questions ("What did P invent?", taught in SFT for every person) and
reverse ones ("Who invented the T?", taught only for group A) about the people of group B. An
answer counts when the response contains the expected answer; counted strictly, only when it is
the whole sentence SFT teaches for both questions, "P invented the T.".

Verdict: held when the diffusion model beats AR on the reverse questions by more than two paired
standard errors, and its forward-reverse gap (items right forward and wrong in reverse) is smaller
than AR's by more than two paired standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llada.data.world import World
from llada.reproduce.base import Claim, Report
from llada.reproduce.measure import examples, score
from llada.reproduce.models import Models
from llada.stats import Accuracy, exceeds_two_se, paired_difference

KINDS = ("diffusion", "ar")
TASKS = ("fact_forward", "fact_reverse")

STATEMENT = ("A masked diffusion model answers a fact asked in reverse about as well as forward, where an "
             "autoregressive model trained on the same text fails the reverse direction (the reversal curse).")
PAPER = "Table 4 (reversal poem completion): LLaDA 8B 51.8 forward / 45.6 reverse; GPT-4o 82.7 / 34.3."
NOTE = ("Forward: \"What did P invent?\", asked in SFT for every person. Reverse: \"Who invented the "
        "T?\", asked in SFT only for group A; the items are group B. No text names an invention "
        "before its inventor. Generation; the first two columns count a response that contains the "
        "expected answer (the invention, or the inventor's name), the last two only the exact sentence "
        "SFT teaches for both questions, \"P invented the T.\".")


@dataclass
class Measured:
    """Per (model, task), per item: whether the response contains the answer, and whether it is the
    taught sentence."""

    hits: dict[tuple[str, str], list[bool]] = field(default_factory=dict)
    whole_sentence: dict[tuple[str, str], list[bool]] = field(default_factory=dict)
    shaped: dict[str, list[bool]] = field(default_factory=dict)
    """Per model, per reverse question: the response names some person of the world (the answer's
    shape), right or wrong."""
    examples: list[str] = field(default_factory=list)


def taught_sentence(item: dict, task: str) -> str:
    """The answer sentence SFT teaches for an invention question: "P invented the T."."""
    if task == "fact_forward":
        return f"{item['prompt'].removeprefix('What did ').removesuffix(' invent?')} invented {item['answer']}."
    return f"{item['answer']} invented the {item['prompt'].removeprefix('Who invented the ').removesuffix('?')}."


def names_someone(response: str, world: World) -> bool:
    """Whether `response` contains the full name of any person of `world`."""
    return any(p.name in response for p in world.people)


# the reverse questions a claim needs for a standard error of at most 0.07 at 50% accuracy
ITEMS_FOR_SE = 51


def measure(models: Models) -> Measured:
    world = World(models.seed, models.recipe.world)
    m = Measured()
    for kind in KINDS:
        for task in TASKS:
            r = score(models, kind, task)  # type: ignore[arg-type]
            m.hits[kind, task] = r.correct
            m.whole_sentence[kind, task] = [t.strip() == taught_sentence(it, task)
                                            for it, t in zip(world.eval_items(task), r.responses, strict=True)]
            if task == "fact_reverse":
                m.shaped[kind] = [names_someone(t, world) for t in r.responses]
            m.examples += examples(r, f"{kind} · {task}", 2)
    return m


def judge(m: Measured) -> Report:
    acc = {k: Accuracy.of(v) for k, v in m.hits.items()}
    whole = {k: Accuracy.of(v) for k, v in m.whole_sentence.items()}
    adv, adv_se = paired_difference(m.hits["diffusion", "fact_reverse"], m.hits["ar", "fact_reverse"])
    gap = {k: [f - r for f, r in zip(m.hits[k, "fact_forward"], m.hits[k, "fact_reverse"], strict=True)]
           for k in KINDS}
    gap_diff, gap_se = paired_difference([g > 0 for g in gap["ar"]], [g > 0 for g in gap["diffusion"]])
    held = exceeds_two_se(adv, adv_se) and exceeds_two_se(gap_diff, gap_se)
    results: dict[str, Any] = {}
    for kind, task in m.hits:
        results[f"{kind}/{task}"] = acc[kind, task].to_dict()
        results[f"{kind}/{task}/whole_sentence"] = whole[kind, task].to_dict()
    results.update(reverse_advantage={"value": adv, "stderr": adv_se},
                   gap_reduction={"value": gap_diff, "stderr": gap_se})
    verdict = (f"Held: the diffusion model beats AR on the reverse questions by {adv:.2f} ± {adv_se:.2f} and its "
               f"forward-reverse gap is smaller by {gap_diff:.2f} ± {gap_se:.2f}." if held else
               f"Did not hold at this scale: reverse advantage {adv:.2f} ± {adv_se:.2f}, gap reduction "
               f"{gap_diff:.2f} ± {gap_se:.2f} (two standard errors needed for each).")
    verdict += (f" Counted by the whole sentence SFT teaches, the reverse answers score "
                f"{whole['diffusion', 'fact_reverse']} (diffusion) and {whole['ar', 'fact_reverse']} (AR).")
    shaped = {k: Accuracy.of(v) for k, v in m.shaped.items()}
    results["reverse_names_someone"] = {k: a.to_dict() for k, a in shaped.items()}
    verdict += (f" By the answer's shape, a reverse answer names some person of the world in "
                f"{shaped['diffusion']} (diffusion) and {shaped['ar']} (AR) of the items, right or wrong.")
    n = len(m.hits["diffusion", "fact_reverse"])
    if n < ITEMS_FOR_SE:
        verdict += (f" With {n} reverse questions a standard error can be as large as {0.5 / n ** 0.5:.2f}; at most 0.07 "
                    f"needs {ITEMS_FOR_SE} or more (a world of {2 * ITEMS_FOR_SE} people, half of them asked in "
                    "reverse: `--size large` has 200).")
    table = [["model", "forward (taught)", "reverse (never seen)", "forward, whole sentence",
              "reverse, whole sentence"]]
    table += [[kind, *[str(acc[kind, t]) for t in TASKS], *[str(whole[kind, t]) for t in TASKS]] for kind in KINDS]
    ours = (f"reverse: diffusion {acc['diffusion', 'fact_reverse']}, AR {acc['ar', 'fact_reverse']}; "
            f"diffusion forward {acc['diffusion', 'fact_forward']}")
    return Report("reversal", STATEMENT, PAPER, ours, held, verdict, table, results, notes=[NOTE],
                  examples=m.examples)


def plot(m: Measured, ax: Any) -> None:
    x = np.arange(2)
    for i, kind in enumerate(KINDS):
        accs = [Accuracy.of(m.hits[kind, t]) for t in TASKS]
        ax.bar(x + (i - 0.5) * 0.38, [a.value for a in accs], 0.38, yerr=[a.stderr for a in accs], capsize=4,
               label="diffusion" if kind == "diffusion" else "autoregressive")
    ax.set_xticks(x, ["forward", "reverse"])
    ax.set_ylabel("exact match")
    ax.set_ylim(0, 1.05)
    ax.legend()


CLAIM = Claim("reversal", ("diffusion", "ar"), measure, judge, plot)

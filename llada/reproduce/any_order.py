"""`llada reproduce any-order`: filling a blank before its clues, diffusion (both sides) vs AR
(Section 2.4, Table 4).

Measurement: the two pretrained models on the world's infill items, one held-out biography per
person with every mention of its person's name blanked; the name comes first, so every clue stands
after the first blank. Generation: as many masks as the name has tokens at each blank (diffusion),
scored at the first; the AR model continues the text before the first blank. Exact name, per item;
and, where the name is mentioned once, a multiple choice of 4 by likelihood (Eq. 6 for diffusion,
exact for AR).

Verdict: held when the diffusion model fills the exact name more often than AR by more than two
paired standard errors (generation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llada.reproduce.base import Claim, Report
from llada.reproduce.measure import examples, score
from llada.reproduce.models import Models
from llada.stats import Accuracy, exceeds_two_se, paired_difference

KINDS = ("diffusion", "ar")

STATEMENT = ("A masked diffusion model fills a blank from the text on both sides; a left-to-right model "
             "cannot use what follows the blank when it generates.")
PAPER = "Section 2.4 / Table 4: infilling and reverse completion follow from the bidirectional mask predictor."


@dataclass
class Measured:
    """Per model kind: exact name per item, and the multiple-choice accuracy (None: not scored)."""

    n_people: int
    hits: dict[str, list[bool]] = field(default_factory=dict)
    choice: dict[str, float | None] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def measure(models: Models) -> Measured:
    m = Measured(models.recipe.world.n_people)
    for kind in KINDS:
        r = score(models, f"{kind}-pretrain", "infill", choice=True)  # type: ignore[arg-type]
        m.hits[kind], m.choice[kind] = r.correct, r.choice_accuracy
        m.examples += examples(r, kind, 3)
    return m


def judge(m: Measured) -> Report:
    acc = {kind: Accuracy.of(m.hits[kind]) for kind in KINDS}
    d, se = paired_difference(m.hits["diffusion"], m.hits["ar"])
    held = exceeds_two_se(d, se)

    def mc(kind: str) -> str:
        return "—" if m.choice[kind] is None else f"{m.choice[kind]:.2f}"

    table = [["model", "generation (exact name)", "multiple choice of 4 (likelihood; one blank only)"],
             ["diffusion (sees both sides)", str(acc["diffusion"]), mc("diffusion")],
             ["autoregressive (left side only)", str(acc["ar"]), mc("ar")]]
    verdict = (f"Held: the diffusion model fills the name {d:.2f} ± {se:.2f} more often." if held else
               f"Did not hold at this scale: difference {d:+.2f} ± {se:.2f}.")
    note = (f"Items: one held-out biography document per person ({m.n_people}), every mention of its person's "
            "name blanked; the name comes first, so every clue stands after the first blank. Generation: "
            "as many masks as the name has tokens at each blank (diffusion), scored at the first; the AR "
            "model continues the text before the first blank. Multiple choice (only when the name is "
            "mentioned once): log p(name | both sides) by Eq. 6 for diffusion, log p(name + rest | before) "
            "exactly for AR.")
    results = {kind: {**acc[kind].to_dict(), "choice_accuracy": m.choice[kind]} for kind in KINDS}
    return Report("any-order", STATEMENT, PAPER, f"name before its clues: diffusion {acc['diffusion']}, AR {acc['ar']}",
                  held, verdict, table, results, notes=[note], examples=m.examples)


def plot(m: Measured, ax: Any) -> None:
    accs = [Accuracy.of(m.hits[k]) for k in KINDS]
    ax.bar([0, 1], [a.value for a in accs], yerr=[a.stderr for a in accs], capsize=4, color=["tab:blue", "tab:orange"])
    ax.axhline(1 / m.n_people, color="grey", linestyle=":", label=f"a random name (1/{m.n_people})")
    ax.set_xticks([0, 1], ["diffusion", "autoregressive"])
    ax.set_ylabel("exact name filled")
    ax.set_ylim(0, 1.05)
    ax.legend()


CLAIM = Claim("any-order", ("diffusion-pretrain", "ar-pretrain"), measure, judge, plot)

"""Writing one claim's run: OUT/report.md, OUT/NAME.png and OUT/results.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llada.reproduce.base import Report


def status(report: Report) -> str:
    """A verdict in words: held, did not hold, measured (a claim without a pass/fail rule), or not
    measured at this size (`Report.at_scale` False)."""
    if not report.at_scale:
        return "not measured at this size"
    return {True: "held", False: "did not hold", None: "measured"}[report.held]


def write(report: Report, draw: Callable[[Any], None], out: Path, context: dict[str, Any]) -> None:
    """OUT/report.md, OUT/NAME.png (`draw` fills its Axes) and OUT/results.json for one claim.

    `context` is the run's setup (size, seed, device, ..., "recipe": the recipe as a dict,
    "command": the command line), written into both files.
    """
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{report.name}.png"
    _figure(report.name, draw, png)
    (out / "report.md").write_text("\n".join(markdown(report, png.name, context)))
    (out / "results.json").write_text(json.dumps({"claim": report.name, "held": report.held if report.at_scale else None,
                                                  "status": status(report), "ours": report.ours,
                                                  "paper": report.paper, "results": report.results,
                                                  "table": report.table, **context}, indent=2, default=str) + "\n")


def _figure(title: str, draw: Callable[[Any], None], path: Path) -> None:
    import matplotlib  # an optional dependency (the `train` extra): only a report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    draw(ax)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: Report, png: str, context: dict[str, Any]) -> list[str]:
    """report.md's lines: claim, paper, ours, result, table, plot `png`, notes, examples, setup."""
    held = status(report) + (" (no pass/fail)" if report.held is None and report.at_scale else "")
    table = [f"| {' | '.join(report.table[0])} |", "|" + "---|" * len(report.table[0])]
    table += [f"| {' | '.join(row)} |" for row in report.table[1:]]
    lines = [f"# `llada reproduce {report.name}`", "",
             f"**Claim.** {report.claim}", "", f"**Paper.** {report.paper}", "",
             f"**Ours.** {report.ours}", "", f"**Result: {held}.** {report.verdict}", "", *table, "",
             f"![{report.name}]({png})", ""]
    lines += [*report.notes, ""]
    if report.examples:
        lines += ["Examples:", "", *[f"- {e}" for e in report.examples], ""]
    rec = context["recipe"]
    lines += ["Setup: " + ", ".join(f"{k} {v}" for k, v in context.items() if k not in ("recipe", "command")) + ".",
              report.recipe or f"Recipe: world {rec['world']}; model {rec['preset']}, {rec['pretrain_steps']} "
              f"pretraining + {rec['sft_steps']} SFT steps of batch {rec['batch_size']}, "
              f"lr {rec['pretrain_lr']:g} / {rec['sft_lr']:g}.",
              f"Command: `{context['command']}`", ""]
    return lines

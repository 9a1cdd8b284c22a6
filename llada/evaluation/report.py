"""The evaluation report: a Markdown table and a plot of accuracy against steps."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from llada.evaluation.builtin import TaskResult


def _row_label(r: TaskResult) -> str:
    if r.kind == "autoregressive":
        return "autoregressive"
    s = r.setting
    extra = f" cfg={s['cfg_scale']:g}" if s.get("cfg_scale") else ""
    return f"diffusion steps={s['steps']} block={s['block_length']} {s['remasking']}{extra}"


def markdown(results: list[TaskResult], likelihood: dict[str, dict[str, Any]]) -> str:
    tasks = list(dict.fromkeys(r.task for r in results))
    rows: dict[str, dict[str, TaskResult]] = defaultdict(dict)
    for r in results:
        rows[_row_label(r)][r.task] = r
    lines = ["# Evaluation on the built-in world", "",
             "Generation accuracy (the answer appears in the response) / multiple-choice accuracy "
             "(highest log-likelihood: Eq. 6 Monte-Carlo for diffusion, exact for AR); forwards per item.", "",
             "| model / setting | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for label, by_task in rows.items():
        cells = []
        for t in tasks:
            r = by_task.get(t)
            if r is None:
                cells.append("-")
                continue
            mc = "-" if r.choice_accuracy is None else f"{r.choice_accuracy:.2f}"
            cells.append(f"{r.generation_accuracy:.2f} / {mc} ({r.forwards / max(1, r.n):.1f} fw)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if likelihood:
        lines += ["", "## Held-out likelihood", "",
                  "| model | NLL nats/token | perplexity | bits/byte | kind |", "|---|---|---|---|---|"]
        for kind, lk in likelihood.items():
            bound = "exact" if lk["exact"] else "upper bound (Eq. 4)"
            lines.append(f"| {kind} | {lk['nll_per_token']:.3f} ± {lk['stderr_per_token']:.3f} | "
                         f"{lk['perplexity']:.2f} | {lk['bits_per_byte']:.3f} | {bound} |")
    lines += ["", "## Examples", ""]
    seen = set()
    for r in results:
        if (r.kind, r.task) in seen:
            continue
        seen.add((r.kind, r.task))
        for ex in r.examples[:2]:
            lines.append(f"- {r.kind} · {r.task}: {ex['prompt']!r} → {ex['response']!r} (expected {ex['answer']!r})")
    return "\n".join(lines) + "\n"


def plot(results: list[TaskResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in results))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
        ar = None
        for r in results:
            if r.task != task:
                continue
            if r.kind == "autoregressive":
                ar = r.generation_accuracy
                continue
            s = r.setting
            key = f"block {s['block_length']} {s['remasking']}" + (f" cfg {s['cfg_scale']:g}" if s["cfg_scale"] else "")
            curves[key].append((s["steps"], r.generation_accuracy))
        for key, pts in curves.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
        if ar is not None:
            ax.axhline(ar, color="black", linestyle="--", label="autoregressive")
        ax.set_title(task)
        ax.set_xlabel("steps")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xscale("log", base=2)
    axes[0][0].set_ylabel("generation accuracy")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, results: list[TaskResult], likelihood: dict[str, dict[str, Any]]) -> None:
    (out / "report.md").write_text(markdown(results, likelihood))
    plot(results, out / "report.png")

"""`llada reproduce bound`: the Eq. 3/4 bound beside the AR model's exact NLL, over training
(Figure 3, Table 7).

Measurement: the held-out loss each pretraining run logged (metrics.jsonl beside its model: Eq. 3
with fixed noise for diffusion, teacher-forced cross-entropy for AR), and, for each pretrained
model at the end of training and at its best logged held-out step (the checkpoint the recipe keeps
at every evaluation), the negative log-likelihood of 64 of the world's held-out documents
(`llada.evaluation.builtin.heldout_likelihood`): the Eq. 4 upper bound with 64 Monte-Carlo samples
per document for diffusion, exact for AR. Both runs have the same budget, so the best steps compare
the two objectives at equal compute with early stopping.

Verdict: none (measured, no pass/fail): the report says which figure is lower and by how much, at
the end and at the best steps, what a bound can and cannot settle, and whether the AR model's
held-out loss rose after its best step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llada.checkpoint import load
from llada.evaluation.builtin import heldout_likelihood
from llada.reproduce.base import Claim, Report
from llada.reproduce.models import Models

KINDS = ("diffusion", "ar")
BITS = 1 / math.log(2)  # nats -> bits
DOCUMENTS, MC_NUM = 64, 64

STATEMENT = ("The masked diffusion loss (Eq. 3) is an upper bound on the model's negative log-likelihood; "
             "at equal budget it is compared with an autoregressive model's exact NLL.")
PAPER = ("Figure 3 / Table 7 (language modelling): LLaDA's bound is within a small margin of AR baselines of "
         "the same size at scale; the paper reports the bound, never an exact NLL.")
NOTE = ("Curves: the held-out loss logged during pretraining (Eq. 3 with fixed noise for diffusion, "
        "teacher-forced cross-entropy for AR), in bits per token. Final: the pretrained models on the "
        "world's held-out paraphrases.")


@dataclass
class Measured:
    """Per model kind: the (step, held-out loss in nats/token) curve, and the held-out figures at
    the end of training ("final") and at the best logged step ("best", with its "step"; absent when
    that checkpoint was not kept, as for a model given by --diffusion / --ar)."""

    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    final: dict[str, dict[str, float]] = field(default_factory=dict)
    best: dict[str, dict[str, float]] = field(default_factory=dict)


def logged_curve(model_dir: Path) -> list[tuple[int, float]]:
    """(step, eval_loss) of every evaluation a training run logged in metrics.jsonl beside `model_dir`."""
    metrics = model_dir.parent / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.exists() else []
    return [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]


def best_checkpoint(model_dir: Path, curve: list[tuple[int, float]]) -> tuple[int, Path] | None:
    """The logged step with the lowest held-out loss and its model directory: the final model when
    it is the last step, else checkpoints/step-N beside it; None when there is no curve or that
    checkpoint was not kept."""
    if not curve:
        return None
    step = min(curve, key=lambda p: p[1])[0]
    if step == curve[-1][0]:
        return step, model_dir
    path = model_dir.parent / "checkpoints" / f"step-{step:06d}"
    return (step, path) if path.is_dir() else None


def measure(models: Models) -> Measured:
    m = Measured()
    for kind in KINDS:
        name = f"{kind}-pretrain"
        model_dir = models.directory(name)  # type: ignore[arg-type]
        m.curves[kind] = logged_curve(model_dir)
        m.final[kind] = _likelihood(models.load(name), models)  # type: ignore[arg-type]
        best = best_checkpoint(model_dir, m.curves[kind])
        if best is not None:
            step, path = best
            figures = m.final[kind] if path == model_dir else _likelihood(load(path, device=models.device), models)
            m.best[kind] = {"step": step, **figures}
    return m


def _likelihood(bundle: Any, models: Models) -> dict[str, float]:
    return heldout_likelihood(bundle, seed=models.seed, world=models.recipe.world, limit=DOCUMENTS, mc_num=MC_NUM)


def _comparison(d: dict[str, float], a: dict[str, float], when: str) -> str:
    """Which of the diffusion bound `d` and the AR model's exact NLL `a` is lower, by how much, and
    what that settles."""
    gap = d["nll_per_token"] - a["nll_per_token"]
    lower = "the AR model's exact NLL" if gap > 0 else "the diffusion bound"
    text = f"{when}: lower is {lower}, by {abs(gap) * BITS:.3f} ± {d['stderr_per_token'] * BITS:.3f} bits/token; "
    return text + ("the bound is at least the diffusion model's true NLL, so that model's held-out NLL is below the "
                   "AR model's." if gap < 0 else "the diffusion figure is a bound, so its true NLL may be lower; "
                   "which model is better is not settled.")


def _verdict(m: Measured) -> str:
    text = _comparison(m.final["diffusion"], m.final["ar"], "At the end of training")
    if all(k in m.best for k in KINDS):
        d, a = m.best["diffusion"], m.best["ar"]
        text += " " + _comparison(d, a, f"At each model's best held-out step (diffusion {d['step']:.0f}, "
                                        f"AR {a['step']:.0f})")
    ar_curve = m.curves["ar"]
    best_ar = min(ar_curve, key=lambda p: p[1]) if ar_curve else None
    if best_ar and best_ar[0] < ar_curve[-1][0]:
        text += (f" The AR model's held-out loss was lowest at step {best_ar[0]} ({best_ar[1] * BITS:.3f} bits/token) "
                 f"and rose to {ar_curve[-1][1] * BITS:.3f} by step {ar_curve[-1][0]}: with this many passes over a "
                 "small corpus it overfits.")
    return text


def _row(kind: str, figures: dict[str, float], when: str) -> list[str]:
    value = figures["nll_per_token"] * BITS
    shown = (f"≤ {value:.3f} ± {figures['stderr_per_token'] * BITS:.3f}" if kind == "diffusion" else f"= {value:.3f}")
    what = f"upper bound (Eq. 4, {MC_NUM} samples/doc)" if kind == "diffusion" else "exact"
    return [kind if kind == "diffusion" else "autoregressive", when, shown, what, f"{figures['bits_per_byte']:.3f}"]


def judge(m: Measured) -> Report:
    table = [["model", "checkpoint", "held-out NLL (bits/token)", "what it is", "bits/byte"]]
    for kind in KINDS:
        table.append(_row(kind, m.final[kind], "end of training"))
        if kind in m.best and m.best[kind]["step"] != m.curves[kind][-1][0]:
            table.append(_row(kind, m.best[kind], f"best held-out step ({m.best[kind]['step']:.0f})"))
    d, a = m.final["diffusion"], m.final["ar"]
    ours = f"held-out: diffusion ≤ {d['nll_per_token'] * BITS:.3f} bits/token, AR = {a['nll_per_token'] * BITS:.3f}"
    if all(k in m.best for k in KINDS):
        ours += (f" at the end; at each one's best step diffusion ≤ {m.best['diffusion']['nll_per_token'] * BITS:.3f}, "
                 f"AR = {m.best['ar']['nll_per_token'] * BITS:.3f}")
    return Report("bound", STATEMENT, PAPER, ours, None, _verdict(m), table,
                  {"final": m.final, "best": m.best, "curves": m.curves}, notes=[NOTE])


def plot(m: Measured, ax: Any) -> None:
    for kind, pts in m.curves.items():
        if pts:
            ax.plot([p[0] for p in pts], [p[1] * BITS for p in pts], "o-",
                    label=("diffusion bound (Eq. 3)" if kind == "diffusion" else "AR exact NLL"))
    ax.set_xlabel("pretraining step")
    ax.set_ylabel("held-out bits per token")
    ax.legend()


CLAIM = Claim("bound", ("diffusion-pretrain", "ar-pretrain"), measure, judge, plot)

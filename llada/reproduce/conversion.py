"""`llada reproduce conversion`: an autoregressive model converted into a block-diffusion model and
trained on, against a diffusion model trained from scratch for the same total steps.

Not a claim of the LLaDA paper, which trains from scratch. Dream 7B starts from Qwen2.5 7B's
weights, LLaDA 2.0 from the Ling AR models and Fast-dLLM v2 adapts Qwen2.5 to block diffusion with
a short fine-tuning: starting from an AR model is how diffusion LMs are made now, on the premise
that it costs less than training the diffusion model from scratch.

Measurement: on the recipe's conversion task (`Recipe.conversion`, 2-digit addition at the default
size), four models, all trained on the same training split with the same model size, batch, lr,
warm-up and seq_len (`llada.reproduce.models.Models.conversion_models`):

    ar-source   an AR model trained from scratch for `ar_steps`
    converted   it converted (`llada.conversion.convert`: bidirectional attention, shifted prediction,
                block-causal sampling with blocks of `block_size`) and fine-tuned with the block
                diffusion loss (`--objective block_diffusion`) for the rest of the total steps
    diffusion   a diffusion model trained from scratch (Eq. 5) for the total steps
    ar          an AR model trained from scratch for the total steps

Each answers the same `eval_items` held-out problems greedily, one token per step: the diffusion
model in one block with low-confidence remasking (gen_length = the longest reference answer + the
stop token), the converted model with low-confidence remasking in its own blocks (its
generation_config: block-causal, block_length = block_size), the AR models left to right; the
task's verifier scores each answer. Each model's held-out loss per answer token, in bits, on the
same problems as conversations, by its own objective: the exact NLL for the AR models, and for the
diffusion models the Eq. 5 loss (scratch) or the block diffusion loss (converted), each averaged
over `DRAWS` noise draws per conversation; both are upper bounds on the NLL (`answer_nats`).

Verdict (fixed before the default size was measured): the claim holds when converted − scratch
diffusion accuracy exceeds two paired standard errors (`exceeds_two_se`), and does not hold
otherwise. Converted − AR at the total steps is reported beside it, not judged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from llada.block_diffusion import block_diffusion_logits, block_forward_process
from llada.data.sft import render_all
from llada.diffusion import NoisedBatch, forward_process, masked_cross_entropy, per_position
from llada.recipe import ConversionRecipe, training_seconds
from llada.reproduce.base import Claim, Report
from llada.reproduce.models import CONVERSION_MODELS, Models
from llada.stats import exceeds_two_se, paired_difference
from llada.tasks import TaskItem, parse_source
from llada.tasks.scoring import TaskScores, evaluate

DRAWS = 32  # noise draws per held-out conversation for a diffusion model's loss
BITS = 1 / math.log(2)  # nats -> bits

# each model's training objective: what it is scored by, and how it samples
OBJECTIVES = {"ar-source": "ar", "converted": "block_diffusion", "diffusion": "diffusion", "ar": "ar"}
LABELS = {"converted": "AR → block diffusion", "diffusion": "diffusion from scratch", "ar": "AR, total steps",
          "ar-source": "AR before conversion"}
ORDER = ("converted", "diffusion", "ar", "ar-source")  # as the table and the plot show them

STATEMENT = ("An autoregressive model converted into a block-diffusion model and trained on beats a diffusion "
             "model trained from scratch for the same total steps.")
PAPER = ("Not in the LLaDA paper (trained from scratch). Dream 7B was initialised from Qwen2.5 7B, LLaDA 2.0 from "
         "the Ling AR models, and Fast-dLLM v2 adapts Qwen2.5 to block diffusion: AR initialisation as the "
         "cheaper route to a diffusion LM.")


@dataclass
class Measured:
    """Per model (`CONVERSION_MODELS`): its scores on the held-out problems, its loss per held-out
    conversation, that conversation's answer tokens, and the seconds its training took."""

    recipe: ConversionRecipe
    items: list[TaskItem]
    gen: int
    scores: dict[str, TaskScores] = field(default_factory=dict)
    nats: dict[str, list[float]] = field(default_factory=dict)
    """Per conversation: the model's loss summed over the answer's tokens, in nats."""
    tokens: dict[str, list[int]] = field(default_factory=dict)
    """Per conversation: its answer tokens (the response of the chat template: answer, end of turn, EOS)."""
    seconds: dict[str, float | None] = field(default_factory=dict)
    """The wall time of the model's training (converted: its block-diffusion stage only); None: not recorded."""

    def hits(self, name: str) -> list[bool]:
        """Per held-out problem: whether the verifier accepted model `name`'s answer."""
        return [r["reward"] == 1.0 for r in self.scores[name].records]

    def bits(self, name: str) -> tuple[float, float]:
        """Model `name`'s held-out loss in bits per answer token, and its standard error over the
        conversations (`per_token`)."""
        value, stderr = per_token(self.nats[name], self.tokens[name])
        return value * BITS, stderr * BITS


def per_token(totals: list[float], counts: list[int]) -> tuple[float, float]:
    """Σ totals / Σ counts, and its standard error over the items (the ratio estimator's: the
    sample SD of totals_i − r · counts_i, over sqrt(n) and the mean count). ValueError when empty."""
    n = len(totals)
    if n == 0 or len(counts) != n:
        raise ValueError("per_token needs equally many totals and counts, at least one")
    r = sum(totals) / sum(counts)
    spread = sum((x - r * c) ** 2 for x, c in zip(totals, counts, strict=True)) / max(1, n - 1)
    return r, math.sqrt(spread / n) / (sum(counts) / n)


# ------------------------------------------------------------------------------ held-out loss


def _ar_nats(model: Any, ids: Tensor, learned: Tensor, block_size: int, draws: int,
             generator: torch.Generator) -> Tensor:
    """(B,) exact NLL of the learned tokens: -log p(x_i | x_<i), the state at i - 1 predicting i."""
    ce = masked_cross_entropy(model(ids)[:, :-1], ids[:, 1:], learned[:, 1:])  # (B, L-1)
    return ce.sum(1)


def _diffusion_nats(model: Any, ids: Tensor, learned: Tensor, block_size: int, draws: int,
                    generator: torch.Generator) -> Tensor:
    """(B,) the Eq. 5 numerator Σ_masked CE / t (the learned tokens maskable), averaged over draws."""
    total = torch.zeros(len(ids), device=ids.device)
    for _ in range(draws):
        noised = forward_process(ids, model.config.roles.mask, maskable=learned, generator=generator)
        total += _weighted(model(noised.noisy_ids), ids, noised)
    return total / draws


def _block_nats(model: Any, ids: Tensor, learned: Tensor, block_size: int, draws: int,
                generator: torch.Generator) -> Tensor:
    """(B,) the block diffusion numerator Σ_masked CE / t_block (one t per block, each block on the
    clean ones before it; a shifted model's block starts from the clean token before it), averaged
    over draws."""
    total = torch.zeros(len(ids), device=ids.device)
    for _ in range(draws):
        noised = block_forward_process(ids, model.config.roles.mask, block_size, maskable=learned, generator=generator)
        logits = block_diffusion_logits(model, noised.noisy_ids, ids, block_size,
                                        shifted=model.config.shifted_prediction)
        total += _weighted(logits, ids, noised)
    return total / draws


def _weighted(logits: Tensor, ids: Tensor, noised: NoisedBatch) -> Tensor:
    """(B,) Σ over the masked positions of CE / t."""
    return (masked_cross_entropy(logits, ids, noised.masked) / per_position(noised.t)).sum(1)


# objective -> (model, input_ids (B, L), learned (B, L), block_size, draws, generator) -> (B,) nats
LOSSES: dict[str, Callable[..., Tensor]] = {"ar": _ar_nats, "diffusion": _diffusion_nats,
                                            "block_diffusion": _block_nats}


def laid_out(row: dict[str, list], objective: str, block_size: int, eos: int) -> tuple[list[int], list[bool]]:
    """A rendered conversation as its model trained on such rows: as it is, or for block diffusion
    EOS-padded to whole blocks (the padding learned, as the training collator pads with
    multiple_of = block_size)."""
    pad = -len(row["input_ids"]) % block_size if objective == "block_diffusion" else 0
    return row["input_ids"] + [eos] * pad, row["response_mask"] + [True] * pad


@torch.no_grad()
def answer_nats(bundle: Any, rows: list[dict[str, list]], objective: str, *, block_size: int = 1,
                draws: int = DRAWS, seed: int = 0, batch_size: int = 64) -> list[float]:
    """Per rendered conversation (`llada.data.sft.render_all`: input_ids, response_mask), the loss
    of `bundle`'s model summed over the response tokens, in nats, by `objective` (a key of LOSSES):
    "ar" the exact NLL; "diffusion" (Eq. 5) and "block_diffusion" (blocks of `block_size`, the row
    EOS-padded to whole blocks: its padding's terms count too) the upper bound, each a mean over
    `draws` noise draws from a generator seeded with `seed`. A bound on the response and its padding
    bounds the response's NLL as well (a marginal is at least the joint). Rows of equal length
    are run together, `batch_size` at a time, unpadded."""
    model, loss = bundle.model, LOSSES[objective]
    eos = model.config.roles.eos
    laid = [laid_out(r, objective, block_size, eos) for r in rows]
    generator = torch.Generator().manual_seed(seed)
    out = [0.0] * len(rows)
    by_length: dict[int, list[int]] = {}
    for i, (ids, _) in enumerate(laid):
        by_length.setdefault(len(ids), []).append(i)
    for group in by_length.values():
        for start in range(0, len(group), batch_size):
            index = group[start:start + batch_size]
            ids = torch.tensor([laid[i][0] for i in index], device=model.device)
            learned = torch.tensor([laid[i][1] for i in index], device=model.device)
            for i, value in zip(index, loss(model, ids, learned, block_size, draws, generator).tolist(), strict=True):
                out[i] = value
    return out


# ---------------------------------------------------------------------------------- measuring


def sampler_overrides(objective: str, gen: int) -> dict[str, Any]:
    """Greedy, one token per step, low-confidence remasking, `gen` tokens: the scratch diffusion model
    in one block; the converted model in its own blocks (generation_config: block-causal,
    block_length = its block_size); the AR models left to right (they read gen_length only)."""
    common: dict[str, Any] = dict(gen_length=gen, steps=gen, remasking="low_confidence", temperature=0.0)
    return {**common, "threshold": None} if objective == "block_diffusion" else {**common, "block_length": gen}


def measure(models: Models) -> Measured:
    recipe = models.recipe.conversion
    assert recipe is not None  # Models.ensure("conversion") refused a recipe without one
    task, _ = parse_source(recipe.task.source)
    items = task.items("test", recipe.task.eval_items, models.seed)
    m = Measured(recipe, items, max(len(it.answer) for it in items) + 1)  # + the stop token
    dirs = models.conversion_models()
    for name in CONVERSION_MODELS:
        bundle, objective = models.load_conversion(name), OBJECTIVES[name]
        m.scores[name] = evaluate(bundle, task, n=len(items), seed=models.seed, **sampler_overrides(objective, m.gen))
        rows = render_all(bundle.tokenizer, [task.conversation(it) for it in items], max_tokens=recipe.task.seq_len)
        m.nats[name] = answer_nats(bundle, rows, objective, block_size=recipe.block_size, seed=models.seed)
        m.tokens[name] = [sum(r["response_mask"]) for r in rows]
        m.seconds[name] = training_seconds(dirs[name])
    return m


# ---------------------------------------------------------------------------------- judging


def differences(m: Measured) -> dict[str, tuple[float, float]]:
    """converted − each other model's accuracy over the same problems, with its paired SE."""
    return {other: paired_difference(m.hits("converted"), m.hits(other)) for other in ("diffusion", "ar", "ar-source")}


def verdict_of(difference: float, stderr: float) -> bool:
    """Held: converted − scratch diffusion exceeds two paired SE."""
    return exceeds_two_se(difference, stderr)


def _training(m: Measured, name: str) -> tuple[str, str]:
    """A model's training (steps) and its wall time, for the table."""
    r, s = m.recipe, m.seconds
    steps = {"converted": f"{r.ar_steps} AR + {r.continued_steps} block diffusion", "diffusion": f"{r.task.steps}",
             "ar": f"{r.task.steps}", "ar-source": f"{r.ar_steps}"}[name]
    stages = [x for x in ((s["ar-source"], s["converted"]) if name == "converted" else (s[name],)) if x is not None]
    if len(stages) < (2 if name == "converted" else 1):
        return steps, "not recorded"
    return steps, " + ".join(f"{x:.0f}" if x >= 10 else f"{x:.1f}" for x in stages) + " s"


def _bits_cell(m: Measured, name: str) -> str:
    value, se = m.bits(name)
    return f"{'=' if OBJECTIVES[name] == 'ar' else '≤'} {value:.3f} ± {se:.3f}"


def judge(m: Measured) -> Report:
    diffs = differences(m)
    d, se = diffs["diffusion"]
    held = verdict_of(d, se)
    table = [["model", "training steps", "wall time", "accepted", "exact", "held-out bits / answer token"]]
    results: dict[str, Any] = {}
    for name in ORDER:
        s, (bits, bits_se) = m.scores[name], m.bits(name)
        table.append([LABELS[name], *_training(m, name), str(s.accuracy), str(s.exact), _bits_cell(m, name)])
        results[name] = {"objective": OBJECTIVES[name], "accuracy": s.accuracy.to_dict(), "exact": s.exact.to_dict(),
                         "bits_per_answer_token": bits, "bits_stderr": bits_se, "answer_tokens": sum(m.tokens[name]),
                         "training_seconds": m.seconds[name]}
    for other, (dd, dse) in diffs.items():
        results[f"converted-{other}"] = {"difference": dd, "stderr": dse}
    da, sea = diffs["ar"]
    outcome = ("beats" if held else "loses to" if exceeds_two_se(-d, se) else "does not beat (within two SE)")
    verdict = (f"{'Held' if held else 'Did not hold'} by the rule fixed beforehand (converted − scratch diffusion "
               f"> 2 paired SE): {d:+.3f} ± {se:.3f}. At this scale the converted model {outcome} the diffusion model "
               f"trained from scratch for {m.recipe.task.steps} steps. Converted − AR at the same total steps (not "
               f"judged): {da:+.3f} ± {sea:.3f}.")
    ours = (f"{len(m.items)} held-out problems: " + ", ".join(f"{LABELS[n]} {m.scores[n].accuracy.correct}/{len(m.items)}"
                                                              for n in ORDER)
            + "; bits per answer token " + ", ".join(f"{n} {_bits_cell(m, n)}" for n in ORDER))
    examples = [f"{LABELS[n]}: {rec['prompt']} → {rec['response']!r} (reference {rec['answer']!r}, "
                f"{'accepted' if rec['reward'] == 1.0 else 'rejected'})" for n in ORDER for rec in m.scores[n].records[:2]]
    r = m.recipe
    return Report("conversion", STATEMENT, PAPER, ours, held, verdict, table, results, notes=_notes(m),
                  examples=examples, recipe=f"Recipe: {r.describe()}; from scratch: "
                                            f"{r.task.describe(' --objective diffusion|ar')}.")


def _notes(m: Measured) -> list[str]:
    r = m.recipe
    notes = [f"Held-out problems: the first {len(m.items)} of the task's test split, never trained on. Sampling: "
             f"greedy, one token per step, {m.gen} tokens; the scratch diffusion model in one block with "
             f"low-confidence remasking, the converted model block-causally in blocks of {r.block_size} (its "
             "generation_config) with low-confidence remasking, the AR models left to right.", "",
             f"Bits per answer token: the same problems as conversations (chat template; the answer tokens are the "
             f"response's: answer, end of turn, EOS), each model by its own objective: AR the exact NLL; diffusion "
             f"from scratch the Eq. 5 loss, converted the block diffusion loss (its row EOS-padded to whole blocks "
             f"as it trained, the padding's terms counted, over the same answer tokens), each a mean over {DRAWS} "
             "noise draws per conversation and an upper bound on the NLL (≤). Each conversation is one row, "
             "unpadded (as the longest row of a training batch is). ± is the standard error over the "
             "conversations.", "",
             "Wall time: the training of each model as it was recorded when it was trained (the converted model: "
             "the AR model's, then the block-diffusion stage's); on a shared machine it is noisy."]
    best = max(m.scores[n].accuracy.value for n in ORDER)
    if best < 0.9:
        notes += ["", f"No model learned the task to 90% in its budget (the best solved {best:.0%}): the difference "
                      "is between unfinished models, one point of their learning curves."]
    return notes


def plot(m: Measured, ax: Any) -> None:
    """Accuracy with its SE per model (bars), and the held-out bits per answer token (points, right axis)."""
    xs = range(len(ORDER))
    accs = [m.scores[n].accuracy for n in ORDER]
    ax.bar(xs, [a.value for a in accs], 0.6, yerr=[a.stderr for a in accs], capsize=4, color="tab:blue")
    ax.set_xticks(xs, [LABELS[n].replace(", ", "\n").replace(" → ", " →\n") for n in ORDER], fontsize=8)
    ax.set_ylabel("held-out problems solved", color="tab:blue")
    ax.set_ylim(0, 1.05)
    right = ax.twinx()
    bits = [m.bits(n) for n in ORDER]
    right.errorbar(xs, [b for b, _ in bits], yerr=[s for _, s in bits], fmt="o", color="tab:red", capsize=4)
    right.set_ylabel("held-out bits / answer token (≤ for diffusion)", color="tab:red")
    right.set_ylim(bottom=0)


CLAIM = Claim("conversion", ("conversion",), measure, judge, plot)

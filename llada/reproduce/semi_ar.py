"""`llada reproduce semi-ar`: an SFT model padded with many EOS, sampled with and without blocks
(Section 4, Appendix B.3).

Measurement: diffusion-eos (fine-tuned from diffusion-pretrain with every conversation padded with
EOS to the full SFT length) answers the world's forward and held-out fact questions on a canvas of
twice the recipes' gen_length, one step per token, low-confidence remasking, with block_length the
whole canvas (a single block), a half, a quarter and an eighth of it (blocks of at least 4 tokens);
per item: exact match and the answer's length in tokens.

Verdict: held when the best of the smaller blocks beats a single block by more than two paired
standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llada.recipe import SAMPLER
from llada.reproduce.base import Claim, Report
from llada.reproduce.measure import examples, score, setting
from llada.reproduce.models import Models
from llada.stats import Accuracy, exceeds_two_se, paired_difference

TASKS = ("fact_forward", "fact_held_out")

STATEMENT = ("An SFT model whose responses are padded with many EOS tokens fills the end of a long canvas with "
             "EOS first and cuts its answers short under pure low-confidence sampling; semi-autoregressive "
             "blocks restore the answers.")
PAPER = ("Section 4 / Appendix B.3: the instruct model with a single block and low-confidence remasking "
         "produces many EOS (short answers); semi-autoregressive remasking is used for it instead.")


@dataclass
class Measured:
    """Per block length, per item (tasks in order): exact match and answer length in tokens."""

    gen: int
    blocks: list[int]
    sft_seq_len: int
    hits: dict[int, list[bool]] = field(default_factory=dict)
    lengths: dict[int, list[int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def mean_length(self, block: int) -> float:
        return sum(self.lengths[block]) / len(self.lengths[block])


def measure(models: Models) -> Measured:
    gen = 2 * SAMPLER.gen_length
    m = Measured(gen, [b for b in (gen, gen // 2, gen // 4, gen // 8) if b >= 4], models.recipe.sft_seq_len)
    tok = models.load("diffusion-eos").tokenizer
    for b in m.blocks:
        m.hits[b], m.lengths[b] = [], []
        for task in TASKS:
            out = score(models, "diffusion-eos", task, setting(steps=gen, gen_length=gen, block_length=b))
            m.hits[b] += out.correct
            m.lengths[b] += [len(tok(t, add_special_tokens=False)["input_ids"]) for t in out.responses]
            if b in (m.blocks[0], m.blocks[-1]):
                m.examples += examples(out, f"block {b} · {task}", 2)
    return m


def judge(m: Measured) -> Report:
    results: dict[str, Any] = {str(b): {**Accuracy.of(m.hits[b]).to_dict(), "mean_answer_tokens": m.mean_length(b),
                                        "empty_answers": sum(n == 0 for n in m.lengths[b])} for b in m.blocks}
    table = [["block_length", "exact match", "mean answer tokens", "empty answers"]]
    table += [[f"{b}" + (" (no blocks)" if b == m.gen else ""), str(Accuracy.of(m.hits[b])),
               f"{results[str(b)]['mean_answer_tokens']:.1f}", str(results[str(b)]["empty_answers"])] for b in m.blocks]
    best = max(m.blocks[1:], key=lambda b: Accuracy.of(m.hits[b]).value) if len(m.blocks) > 1 else m.gen
    d, se = paired_difference(m.hits[best], m.hits[m.gen])
    held = exceeds_two_se(d, se)
    verdict = (f"Held: blocks of {best} beat a single block by {d:.2f} ± {se:.2f}." if held else
               f"Did not hold at this scale: blocks of {best} vs a single block {d:+.2f} ± {se:.2f}.")
    note = (f"The SFT model was fine-tuned with every conversation padded with EOS to {m.sft_seq_len} "
            f"tokens (--padding max_length); answers are sampled with gen_length {m.gen}, {m.gen} steps, "
            "low-confidence remasking. Items: " + ", ".join(TASKS) + ".")
    ours = f"no blocks {Accuracy.of(m.hits[m.gen])}, block {best} {Accuracy.of(m.hits[best])}"
    return Report("semi-ar", STATEMENT, PAPER, ours, held, verdict, table, results, notes=[note],
                  examples=m.examples)


def plot(m: Measured, ax: Any) -> None:
    accs = [Accuracy.of(m.hits[b]) for b in m.blocks]
    ax.errorbar(m.blocks, [a.value for a in accs], yerr=[a.stderr for a in accs], marker="o", capsize=3,
                label="exact match")
    ax.set_xscale("log", base=2)
    ax.set_xticks(m.blocks, [str(b) for b in m.blocks])
    ax.set_xlabel("block_length (rightmost: a single block)")
    ax.set_ylabel("exact match")
    ax.set_ylim(0, 1.05)
    ax2 = ax.twinx()
    ax2.plot(m.blocks, [m.mean_length(b) for b in m.blocks], "s--", color="grey", label="mean answer tokens")
    ax2.set_ylabel("mean answer tokens")
    ax.legend(loc="lower left")
    ax2.legend(loc="lower right")


CLAIM = Claim("semi-ar", ("diffusion-eos",), measure, judge, plot)

"""The reversal-poem task (LLaDA paper, Table 4): the reversal curse on Chinese poem couplets.

Forward: given a line, give the next one. Reverse: given a line, give the one before. An
autoregressive model learns the forward direction far better than the reverse; a masked
diffusion model sees both sides in training, and the paper reports the two close together.

The data is a JSON list of couplets, each an object with the two lines as strings, in the format
of the reference `data/poem_data.json` (github.com/ML-GSAI/LLaDA):

    [{"first": "<line 1>", "second": "<line 2>", "source": "<poem, optional>"}, ...]

The file is the user's to supply; nothing is downloaded. Following the reference
`eval_reverse.py`: each item is one user turn rendered with the chat template, asking in Chinese
for the next (forward) or previous (reverse) line and to answer with the line alone; the answer is
decoded greedily with gen_length = steps = block_length = 28, no CFG, and the EOS logit set to -inf
(`--eos_inf`, as EVAL.md runs it). An item counts as correct when the expected line appears in the
response (the reference's rule); `exact`, stricter, asks the response to equal the line once
whitespace and punctuation are removed from both.

Two ways to run it:

    llada poem MODEL_DIR poem_data.json --out_dir runs/poem       # results.json + report.md

    LLADA_POEM_DATA=poem_data.json llada lm-eval --model llada \\
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct --preset llada-8b-instruct \\
        --tasks reversal_poem_forward,reversal_poem_reverse
        # or --metadata poem_data=poem_data.json instead of the environment variable; without
        # --preset add --include_path llada/evaluation/tasks --apply_chat_template and the
        # sampler settings in --model_args (gen_length=28,steps=28,block_length=28,logits_eos_inf=True)

lm-eval task configs cannot take a data path from the command line themselves, so the lm-eval
tasks (llada/evaluation/tasks/reversal_poem/) read it from lm-eval's --metadata key `poem_data` or,
failing that, the environment variable LLADA_POEM_DATA.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llada.errors import DataError, UserError

# The question wording of the reference eval_reverse.py: "<line>: what is the next / previous line?"
# followed by "just output the sentence directly". Kept verbatim so that scores are comparable.
QUESTION = {"forward": "的下一句是什么？", "reverse": "的上一句是什么？"}
INSTRUCTION = " 直接输出句子即可。"
DIRECTIONS = ("forward", "reverse")
DATA_ENV = "LLADA_POEM_DATA"


@dataclass(frozen=True)
class Couplet:
    first: str
    second: str
    source: str = ""


@dataclass(frozen=True)
class PoemItem:
    direction: str  # "forward" (given first, answer second) or "reverse" (given second, answer first)
    prompt: str  # the user message, before the chat template
    answer: str  # the expected line
    source: str = ""


def load_couplets(path: str | Path) -> list[Couplet]:
    """Couplets of a JSON file in the reference's format; DataError naming the file and entry otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a JSON list of {{\"first\": ..., \"second\": ...}} couplets")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid UTF-8 JSON ({e})") from None
    if not isinstance(records, list) or not records:
        raise DataError(f"{path}: expected a non-empty JSON list of couplets, got {type(records).__name__}")
    out = []
    for i, r in enumerate(records):
        if not (isinstance(r, dict) and isinstance(r.get("first"), str) and isinstance(r.get("second"), str)
                and r["first"].strip() and r["second"].strip()):
            raise DataError(f"{path}: entry {i} needs non-empty string fields \"first\" and \"second\", got {r!r}")
        out.append(Couplet(r["first"].strip(), r["second"].strip(), str(r.get("source", ""))))
    return out


def build_items(couplets: list[Couplet], direction: str) -> list[PoemItem]:
    """One item per couplet: forward asks for the second line given the first, reverse the reverse."""
    if direction not in DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}; choose one of: {', '.join(DIRECTIONS)}")
    given, wanted = ("first", "second") if direction == "forward" else ("second", "first")
    return [PoemItem(direction, getattr(c, given) + QUESTION[direction] + INSTRUCTION, getattr(c, wanted), c.source)
            for c in couplets]


def normalize(text: str) -> str:
    """`text` without whitespace and punctuation (Unicode categories P*, Z* and control characters)."""
    return "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch)[0] not in "PZC")


def score(response: str, answer: str) -> tuple[bool, bool]:
    """(hit, exact): hit = the answer appears in the response (the reference's rule); exact = the two
    are equal once whitespace and punctuation are removed."""
    return answer in response, normalize(response) == normalize(answer) != ""


def accuracy(flags: list[bool]) -> tuple[float, float]:
    """(p, standard error sqrt(p (1 - p) / n)) of a list of 0/1 outcomes."""
    if not flags:
        return float("nan"), float("nan")
    p = sum(flags) / len(flags)
    return p, math.sqrt(p * (1 - p) / len(flags))


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per direction: n, accuracy and its standard error, exact and its standard error."""
    out = {}
    for d in DIRECTIONS:
        rows = [r for r in records if r["direction"] == d]
        acc, acc_se = accuracy([r["hit"] for r in rows])
        exact, exact_se = accuracy([r["exact"] for r in rows])
        out[d] = {"n": len(rows), "accuracy": acc, "accuracy_se": acc_se, "exact": exact, "exact_se": exact_se}
    return out


def report(settings: dict[str, Any], summary: dict[str, dict[str, float]]) -> str:
    """A short Markdown report: the settings and one row per direction."""
    lines = ["# Reversal poems (Table 4)", "",
             f"Model `{settings['model']}`, {settings['couplets']} couplets from `{settings['data']}`; "
             f"gen_length {settings['gen_length']}, steps {settings['steps']}, block_length "
             f"{settings['block_length']}, cfg_scale {settings['cfg_scale']}, logits_eos_inf "
             f"{settings['logits_eos_inf']}, greedy, chat template.", "",
             "| direction | n | accuracy (line in answer) | exact (punctuation and spaces removed) |",
             "|---|---|---|---|"]
    for d in DIRECTIONS:
        s = summary[d]
        lines.append(f"| {d} | {s['n']} | {s['accuracy']:.3f} ± {s['accuracy_se']:.3f} "
                     f"| {s['exact']:.3f} ± {s['exact_se']:.3f} |")
    lines += ["", "± is one standard error, sqrt(p (1 - p) / n)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ lm-eval task helpers

def data_path(poem_data: str | None = None) -> str:
    """The couplet file for the lm-eval tasks: lm-eval's --metadata poem_data=..., else $LLADA_POEM_DATA."""
    path = poem_data or os.environ.get(DATA_ENV)
    if not path:
        raise UserError(f"the reversal_poem tasks need the couplet file: pass --metadata poem_data=FILE "
                        f"or set {DATA_ENV}=FILE (a JSON list of {{\"first\", \"second\"}} couplets)")
    return path


def lm_eval_dataset(direction: str, poem_data: str | None = None, **_: Any) -> Any:
    """A datasets.DatasetDict with one split "test" of items (prompt, answer, source) for lm-eval."""
    import datasets

    items = build_items(load_couplets(data_path(poem_data)), direction)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([asdict(it) for it in items])})


def lm_eval_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval process_results: acc (the reference's rule) and exact for one generated answer."""
    hit, exact = score(results[0], doc["answer"])
    return {"acc": float(hit), "exact": float(exact)}

"""`llada reproduce NAME`: one claim of the paper, trained for and measured on the built-in world.

    llada reproduce reversal     diffusion vs AR on forward and reverse fact questions (Table 4)
    llada reproduce remasking    low-confidence vs random (and margin, entropy) remasking over step counts
    llada reproduce semi-ar      an SFT model padded with many EOS, sampled with and without blocks
    llada reproduce bound        the Eq. 3/4 bound beside the AR model's exact NLL, over training
    llada reproduce any-order    filling a blank before its clues: diffusion (both sides) vs AR
    llada reproduce all          every claim, sharing the models

Each claim writes OUT_DIR/NAME/report.md, NAME.png and results.json. The models are trained once
per (size, seed) under OUT_DIR/models with the recipe of the size (`llada.recipe.RECIPES`), with
equal budgets for the diffusion model and its autoregressive baseline (same world, data, model
shape, steps and learning rates: only the loss and the attention mask differ), and shared by the
claims; --diffusion / --ar reuse models trained elsewhere (their SFT model directories).

Every figure is an accuracy over n items with its standard error sqrt(p (1 - p) / n); a
difference between two models on the same items carries the paired standard error. A claim
"holds" when the difference it predicts exceeds two standard errors; otherwise the report says
it did not hold at this scale, with the numbers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from llada.errors import UserError
from llada.recipe import RECIPES, Recipe

# --size -> recipe: test runs in seconds (the test suite), default fits 15 minutes on 2 CPU cores
SIZES = {"test": "test", "default": "reproduce", "large": "large"}


# ---------------------------------------------------------------------------------------- figures
@dataclass
class Accuracy:
    """k correct of n, with the binomial standard error."""

    correct: int
    n: int

    @classmethod
    def of(cls, hits: list[bool]) -> Accuracy:
        return cls(sum(map(bool, hits)), len(hits))

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def stderr(self) -> float:
        p = self.value
        return math.sqrt(p * (1 - p) / self.n) if self.n else float("nan")

    def __str__(self) -> str:
        return f"{self.value:.2f} ± {self.stderr:.2f} ({self.correct}/{self.n})"

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "stderr": self.stderr, "correct": self.correct, "n": self.n}


def paired_difference(a: list[bool], b: list[bool]) -> tuple[float, float]:
    """mean(a - b) over the same items, and its standard error."""
    if len(a) != len(b) or not a:
        raise ValueError("paired differences need two equally long, non-empty lists")
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1)
    return mean, math.sqrt(var / len(d))


# ------------------------------------------------------------------------------------------ models
@dataclass
class Models:
    """The models a claim needs, trained on first use (or given by flag) and shared across claims."""

    out: Path
    recipe: Recipe
    seed: int
    device: str
    given: dict[str, str] = field(default_factory=dict)
    progress: bool = True
    _loaded: dict[str, Any] = field(default_factory=dict)
    _dirs: dict[str, Path] = field(default_factory=dict)

    def path(self, name: Literal["diffusion", "ar", "diffusion-pretrain", "ar-pretrain", "diffusion-eos"]) -> Path:
        """The model directory of `name`, training it (and what it starts from) when needed."""
        from llada.recipe import train_recipe

        if name in self.given:
            return Path(self.given[name])
        if name not in self._dirs:
            objective = "ar" if name.startswith("ar") else "diffusion"
            if name.endswith("-pretrain") and objective in self.given:  # what the given model was tuned from
                self._dirs[name] = _tuned_from(Path(self.given[objective]), f"--{objective}")
            elif name == "diffusion-eos":  # responses padded with EOS to the full SFT length
                _, tuned = train_recipe(self.recipe, self.out / "diffusion-eos", seed=self.seed,
                                        sft={"padding": "max_length"}, progress=self.progress,
                                        pretrained=self.path("diffusion-pretrain"))
                self._dirs[name] = tuned
            else:
                pretrained, tuned = train_recipe(self.recipe, self.out / objective, objective=objective,
                                                 seed=self.seed, progress=self.progress)
                self._dirs[objective], self._dirs[f"{objective}-pretrain"] = tuned, pretrained
        return self._dirs[name]

    def load(self, name: str) -> Any:
        from llada.checkpoint import load

        if name not in self._loaded:  # a given model's kind was checked up front (check_given)
            self._loaded[name] = load(self.path(name), device=self.device)  # type: ignore[arg-type]
        return self._loaded[name]


def _tuned_from(model_dir: Path, flag: str) -> Path:
    """The pretrained model directory an SFT model directory (given by `flag`) was fine-tuned from."""
    from llada.checkpoint import read_json
    from llada.train import TRAINING_CONFIG

    saved = model_dir / TRAINING_CONFIG
    record = read_json(saved) if saved.is_file() else None
    start = record.get("model") if isinstance(record, dict) else None
    if not isinstance(start, str) or not Path(start).is_dir():
        raise UserError(f"{flag} {model_dir}: cannot tell which pretrained model it was fine-tuned from "
                        f"(no {TRAINING_CONFIG} naming a directory that exists); this claim needs the pretrained "
                        "model too")
    return Path(start)


# The given models (--diffusion / --ar) whose pretrained starting point a claim measures as well.
PRETRAINED_FOR: dict[str, tuple[str, ...]] = {"semi-ar": ("diffusion",), "bound": ("diffusion", "ar"),
                                              "any-order": ("diffusion", "ar")}


def check_given(given: dict[str, str], names: list[str], seed: int, size: str, recipe: Recipe) -> None:
    """Refuse, before anything is trained, a --diffusion / --ar directory the claims `names` cannot
    use: not a model directory, a model of the other kind, not fine-tuned on the built-in world of
    (`seed`, `recipe.world`) by llada (a report on a model never taught these facts would only say
    the claim "did not hold"), or, where a claim measures its pretrained model too, no record of it."""
    for objective, path in given.items():
        flag, root = f"--{objective}", Path(path)
        _check_model_kind(flag, root, "autoregressive" if objective == "ar" else "diffusion")
        _check_training_record(flag, root, seed, size, recipe)
        if any(objective in PRETRAINED_FOR.get(n, ()) for n in names):
            _tuned_from(root, flag)


def _check_model_kind(flag: str, root: Path, want: str) -> None:
    from llada.checkpoint import CONFIG_NAME, read_config

    if not root.is_dir():
        raise UserError(f"{flag} {root} is not a model directory (no such directory)")
    if not (root / CONFIG_NAME).is_file():
        raise UserError(f"{flag} {root} is not a model directory (no {CONFIG_NAME})")
    kind = read_config(root).kind
    if kind != want:
        raise UserError(f"{flag} {root} is {'an' if kind[0] == 'a' else 'a'} {kind} model; "
                        f"{flag} needs {'an' if want[0] == 'a' else 'a'} {want} one")


def _check_training_record(flag: str, root: Path, seed: int, size: str, recipe: Recipe) -> None:
    from llada.checkpoint import read_json
    from llada.train import TRAINING_CONFIG, trained_world

    path = root / TRAINING_CONFIG
    if not path.is_file():
        raise UserError(f"{flag} {root} has no {TRAINING_CONFIG}, so nothing says it was fine-tuned on the built-in "
                        f"world these claims ask about; give a model directory llada sft wrote, or leave {flag} "
                        "out to train one")
    record = read_json(path)
    if not isinstance(record, dict):
        raise UserError(f"{path}: expected a JSON object")
    if record.get("data") is not None:
        raise UserError(f"{flag} {root} was trained on --data {record['data']}, not the built-in world these "
                        "claims ask about")
    if record.get("stage") != "sft":
        raise UserError(f"{flag} {root} is a {record.get('stage')} model; {flag} takes a model fine-tuned "
                        "by llada sft (the claims ask it questions)")
    try:
        trained = trained_world(root)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: its seed and world cannot be read ({e})") from None
    if trained != (seed, recipe.world):
        raise UserError(f"{flag} {root} was trained on the world (seed {trained[0]}, {trained[1]}), but --size "
                        f"{size} --seed {seed} evaluates on (seed {seed}, {recipe.world})")


# ------------------------------------------------------------------------------------------ claims
@dataclass
class Report:
    """What one claim's run found."""

    name: str
    claim: str
    paper: str
    ours: str
    held: bool | None
    verdict: str
    table: list[list[str]]
    results: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


def _setting(**changes: Any) -> Any:
    from llada.recipe import SAMPLER

    return SAMPLER.replace(**changes)


def _task(models: Models, name: str, task: str, setting: Any = None, choice: bool = False) -> Any:
    from llada.evaluation.builtin import run_task

    return run_task(models.load(name), task, setting or _setting(), seed=models.seed, world=models.recipe.world,
                    choice=choice, name=name, mc_num=32)


def _examples(result: Any, label: str, k: int = 3) -> list[str]:
    return [f"{label}: {ex['prompt']!r} → {ex['response']!r} (expected {ex['answer']!r})"
            for ex in result.examples[:k]]


def _taught_sentence(item: dict, task: str) -> str:
    """The answer sentence SFT teaches for an invention question: "P invented the T."."""
    if task == "fact_forward":
        return f"{item['prompt'].removeprefix('What did ').removesuffix(' invent?')} invented {item['answer']}."
    return f"{item['answer']} invented the {item['prompt'].removeprefix('Who invented the ').removesuffix('?')}."


def claim_reversal(models: Models) -> tuple[Report, Callable]:
    from llada.data.world import World

    world = World(models.seed, models.recipe.world)
    rows, res, hits, strict, examples = [], {}, {}, {}, []
    for kind in ("diffusion", "ar"):
        for task in ("fact_forward", "fact_reverse"):
            r = _task(models, kind, task)
            hits[kind, task] = r.correct
            strict[kind, task] = [t.strip() == _taught_sentence(it, task)
                                  for it, t in zip(world.eval_items(task), r.responses, strict=True)]
            res[f"{kind}/{task}"] = Accuracy.of(r.correct).to_dict()
            res[f"{kind}/{task}/whole_sentence"] = Accuracy.of(strict[kind, task]).to_dict()
            examples += _examples(r, f"{kind} · {task}", 2)
    acc = {k: Accuracy.of(v) for k, v in hits.items()}
    for kind in ("diffusion", "ar"):
        rows.append([kind, str(acc[kind, "fact_forward"]), str(acc[kind, "fact_reverse"]),
                     str(Accuracy.of(strict[kind, "fact_forward"])), str(Accuracy.of(strict[kind, "fact_reverse"]))])
    adv, adv_se = paired_difference(hits["diffusion", "fact_reverse"], hits["ar", "fact_reverse"])
    gap = {k: [f - r for f, r in zip(hits[k, "fact_forward"], hits[k, "fact_reverse"], strict=True)]
           for k in ("diffusion", "ar")}
    gap_diff, gap_se = paired_difference([g > 0 for g in gap["ar"]], [g > 0 for g in gap["diffusion"]])
    held = adv > 2 * adv_se and gap_diff > 2 * gap_se
    res.update(reverse_advantage={"value": adv, "stderr": adv_se},
               gap_reduction={"value": gap_diff, "stderr": gap_se})
    d, a = acc["diffusion", "fact_reverse"], acc["ar", "fact_reverse"]
    report = Report(
        "reversal",
        "A masked diffusion model answers a fact asked in reverse about as well as forward, where an "
        "autoregressive model trained on the same text fails the reverse direction (the reversal curse).",
        "Table 4 (reversal poem completion): LLaDA 8B 51.8 forward / 45.6 reverse; GPT-4o 82.7 / 34.3.",
        f"reverse: diffusion {d}, AR {a}; diffusion forward {acc['diffusion', 'fact_forward']}",
        held,
        (f"Held: the diffusion model beats AR on the reverse questions by {adv:.2f} ± {adv_se:.2f} and its "
         f"forward-reverse gap is smaller by {gap_diff:.2f} ± {gap_se:.2f}." if held else
         f"Did not hold at this scale: reverse advantage {adv:.2f} ± {adv_se:.2f}, gap reduction "
         f"{gap_diff:.2f} ± {gap_se:.2f} (two standard errors needed for each).")
        + f" Counted by the whole sentence SFT teaches, the reverse answers score "
          f"{Accuracy.of(strict['diffusion', 'fact_reverse'])} (diffusion) and "
          f"{Accuracy.of(strict['ar', 'fact_reverse'])} (AR).",
        [["model", "forward (taught)", "reverse (never seen)", "forward, whole sentence", "reverse, whole sentence"],
         *rows], res,
        notes=["Forward: \"What did P invent?\", asked in SFT for every person. Reverse: \"Who invented the "
               "T?\", asked in SFT only for group A; the items are group B. No text names an invention "
               "before its inventor. Generation; the first two columns count a response that contains the "
               "expected answer (the invention, or the inventor's name), the last two only the exact sentence "
               "SFT teaches for both questions, \"P invented the T.\"."],
        examples=examples)

    def plot(ax_fig: Any) -> None:
        fig, ax = ax_fig
        import numpy as np

        x = np.arange(2)
        for i, kind in enumerate(("diffusion", "ar")):
            vals = [acc[kind, t].value for t in ("fact_forward", "fact_reverse")]
            errs = [acc[kind, t].stderr for t in ("fact_forward", "fact_reverse")]
            ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, yerr=errs, capsize=4,
                   label="diffusion" if kind == "diffusion" else "autoregressive")
        ax.set_xticks(x, ["forward", "reverse"])
        ax.set_ylabel("exact match")
        ax.set_ylim(0, 1.05)
        ax.legend()
    return report, plot


def claim_remasking(models: Models) -> tuple[Report, Callable]:
    from llada.recipe import SAMPLER

    gen = SAMPLER.gen_length
    steps = sorted({max(1, gen // 4), gen // 2, gen})
    strategies = ("low_confidence", "random", "margin", "entropy")
    tasks = ("fact_held_out", "fact_forward", "fact_reverse")
    res: dict[str, Any] = {}
    hits: dict[tuple[str, int], list[bool]] = {}
    for r_name in strategies:
        for s in steps:
            all_hits: list[bool] = []
            for task in tasks:
                out = _task(models, "diffusion", task, _setting(steps=s, remasking=r_name))
                all_hits += out.correct
                res[f"{r_name}/{s}/{task}"] = Accuracy.of(out.correct).to_dict()
            hits[r_name, s] = all_hits
            res[f"{r_name}/{s}"] = Accuracy.of(all_hits).to_dict()
    table = [["remasking", *[f"{s} steps" for s in steps]]]
    for r_name in strategies:
        table.append([r_name, *[str(Accuracy.of(hits[r_name, s])) for s in steps]])
    diffs = {s: paired_difference(hits["low_confidence", s], hits["random", s]) for s in steps}
    held = all(d > 2 * se for d, se in diffs.values()) if steps else None
    lc, rd = Accuracy.of(hits["low_confidence", gen]), Accuracy.of(hits["random", gen])
    report = Report(
        "remasking",
        "Low-confidence remasking (keep the most confident predictions) beats random remasking.",
        "Table 6 (base model, GSM8K, 1024 tokens): random remasking 21.3, low-confidence 70.0.",
        f"at {gen} steps: low-confidence {lc}, random {rd}",
        held,
        ("Held at every step count: " if held else "Did not hold at every step count: ")
        + "; ".join(f"{s} steps {d:+.2f} ± {se:.2f}" for s, (d, se) in diffs.items()) + " (low-confidence − random).",
        table, res,
        notes=[f"Items: {', '.join(tasks)} ({len(hits['random', gen])} in all), answered by the SFT model with "
               f"gen_length {gen}, block_length {SAMPLER.block_size}; exact match. Per task and strategy "
               "in results.json. An answer the model has memorised comes out in any order, and one it does not "
               "know in none, so the order of unmasking can only matter on the items in between; the paper's "
               "gap is on multi-step reasoning (GSM8K), which a model of this size has no share of."])

    def plot(ax_fig: Any) -> None:
        _, ax = ax_fig
        for r_name in strategies:
            accs = [Accuracy.of(hits[r_name, s]) for s in steps]
            ax.errorbar(steps, [a.value for a in accs], yerr=[a.stderr for a in accs], marker="o", capsize=3,
                        label=r_name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.set_xlabel("denoising steps")
        ax.set_ylabel("exact match")
        ax.set_ylim(0, 1.05)
        ax.legend()
    return report, plot


def claim_semi_ar(models: Models) -> tuple[Report, Callable]:
    from llada.recipe import SAMPLER

    gen = 2 * SAMPLER.gen_length
    blocks = [b for b in (gen, gen // 2, gen // 4, gen // 8) if b >= 4]
    tasks = ("fact_forward", "fact_held_out")
    bundle = models.load("diffusion-eos")
    tok = bundle.tokenizer
    res: dict[str, Any] = {}
    hits, lengths = {}, {}
    examples: list[str] = []
    for b in blocks:
        h: list[bool] = []
        n_tok: list[int] = []
        for task in tasks:
            out = _task(models, "diffusion-eos", task, _setting(steps=gen, gen_length=gen, block_length=b))
            h += out.correct
            n_tok += [len(tok(t, add_special_tokens=False)["input_ids"]) for t in out.responses]
            if b in (blocks[0], blocks[-1]):
                examples += _examples(out, f"block {b} · {task}", 2)
        hits[b], lengths[b] = h, n_tok
        res[str(b)] = {**Accuracy.of(h).to_dict(), "mean_answer_tokens": sum(n_tok) / len(n_tok),
                       "empty_answers": sum(n == 0 for n in n_tok)}
    table = [["block_length", "exact match", "mean answer tokens", "empty answers"]]
    for b in blocks:
        table.append([f"{b}" + (" (no blocks)" if b == gen else ""), str(Accuracy.of(hits[b])),
                      f"{res[str(b)]['mean_answer_tokens']:.1f}", str(res[str(b)]["empty_answers"])])
    best = max(blocks[1:], key=lambda b: Accuracy.of(hits[b]).value) if len(blocks) > 1 else gen
    d, se = paired_difference(hits[best], hits[gen])
    held = d > 2 * se
    report = Report(
        "semi-ar",
        "An SFT model whose responses are padded with many EOS tokens fills the end of a long canvas with "
        "EOS first and cuts its answers short under pure low-confidence sampling; semi-autoregressive "
        "blocks restore the answers.",
        "Section 4 / Appendix B.3: the instruct model with a single block and low-confidence remasking "
        "produces many EOS (short answers); semi-autoregressive remasking is used for it instead.",
        f"no blocks {Accuracy.of(hits[gen])}, block {best} {Accuracy.of(hits[best])}",
        held,
        (f"Held: blocks of {best} beat a single block by {d:.2f} ± {se:.2f}." if held else
         f"Did not hold at this scale: blocks of {best} vs a single block {d:+.2f} ± {se:.2f}."),
        table, res,
        notes=[f"The SFT model was fine-tuned with every conversation padded with EOS to {models.recipe.sft_seq_len} "
               f"tokens (--padding max_length); answers are sampled with gen_length {gen}, {gen} steps, "
               "low-confidence remasking. Items: " + ", ".join(tasks) + "."],
        examples=examples)

    def plot(ax_fig: Any) -> None:
        fig, ax = ax_fig
        accs = [Accuracy.of(hits[b]) for b in blocks]
        ax.errorbar(blocks, [a.value for a in accs], yerr=[a.stderr for a in accs], marker="o", capsize=3,
                    label="exact match")
        ax.set_xscale("log", base=2)
        ax.set_xticks(blocks, [str(b) for b in blocks])
        ax.set_xlabel("block_length (rightmost: a single block)")
        ax.set_ylabel("exact match")
        ax.set_ylim(0, 1.05)
        ax2 = ax.twinx()
        ax2.plot(blocks, [sum(lengths[b]) / len(lengths[b]) for b in blocks], "s--", color="grey",
                 label="mean answer tokens")
        ax2.set_ylabel("mean answer tokens")
        ax.legend(loc="lower left")
        ax2.legend(loc="lower right")
    return report, plot


def claim_bound(models: Models) -> tuple[Report, Callable]:
    from llada.evaluation.builtin import heldout_likelihood

    curves: dict[str, list[tuple[int, float]]] = {}
    final: dict[str, dict[str, float]] = {}
    for kind in ("diffusion", "ar"):
        path = models.path(f"{kind}-pretrain")  # type: ignore[arg-type]
        metrics = path.parent / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.exists() else []
        curves[kind] = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
        final[kind] = heldout_likelihood(models.load(f"{kind}-pretrain"), seed=models.seed, world=models.recipe.world,
                                         limit=64, mc_num=64)
    d, a = final["diffusion"], final["ar"]
    best_ar = min(curves["ar"], key=lambda p: p[1]) if curves["ar"] else None
    lower = "the AR model's exact NLL" if a["nll_per_token"] < d["nll_per_token"] else "the diffusion bound"
    gap = d["nll_per_token"] - a["nll_per_token"]
    gap_se = d["stderr_per_token"]
    bits = 1 / math.log(2)
    table = [["model", "held-out NLL (bits/token)", "what it is", "bits/byte"],
             ["diffusion", f"≤ {d['nll_per_token'] * bits:.3f} ± {d['stderr_per_token'] * bits:.3f}",
              "upper bound (Eq. 4, 64 samples/doc)", f"{d['bits_per_byte']:.3f}"],
             ["autoregressive", f"= {a['nll_per_token'] * bits:.3f}", "exact", f"{a['bits_per_byte']:.3f}"]]
    report = Report(
        "bound",
        "The masked diffusion loss (Eq. 3) is an upper bound on the model's negative log-likelihood; "
        "at equal budget it is compared with an autoregressive model's exact NLL.",
        "Figure 3 / Table 7 (language modelling): LLaDA's bound is within a small margin of AR baselines of "
        "the same size at scale; the paper reports the bound, never an exact NLL.",
        f"held-out: diffusion ≤ {d['nll_per_token'] * bits:.3f} bits/token, AR = {a['nll_per_token'] * bits:.3f}",
        None,
        (f"Lower: {lower}, by {abs(gap) * bits:.3f} ± {gap_se * bits:.3f} bits/token. "
         + ("The bound is at least the diffusion model's true NLL, so that model's held-out NLL is below the AR "
            "model's. " if gap < 0 else
            "The diffusion figure is a bound, so its true NLL may be lower; which model is better is not settled. ")
         + (f"The AR model's held-out loss was lowest at step {best_ar[0]} ({best_ar[1] * bits:.3f} bits/token) and "
            "rose afterwards: with this many passes over a small corpus it overfits, where the diffusion "
            "model's does not rise as much (as Prabhudesai et al. 2025 report in data-constrained settings)."
            if best_ar and curves["ar"] and best_ar[0] < curves["ar"][-1][0] else "")),
        table, {"final": final, "curves": curves},
        notes=["Curves: the held-out loss logged during pretraining (Eq. 3 with fixed noise for diffusion, "
               "teacher-forced cross-entropy for AR), in bits per token. Final: the pretrained models on the "
               "world's held-out paraphrases."])

    def plot(ax_fig: Any) -> None:
        _, ax = ax_fig
        for kind, pts in curves.items():
            if pts:
                ax.plot([p[0] for p in pts], [p[1] * bits for p in pts], "o-",
                        label=("diffusion bound (Eq. 3)" if kind == "diffusion" else "AR exact NLL"))
        ax.set_xlabel("pretraining step")
        ax.set_ylabel("held-out bits per token")
        ax.legend()
    return report, plot


def claim_any_order(models: Models) -> tuple[Report, Callable]:
    res, acc, choice, hits = {}, {}, {}, {}
    examples: list[str] = []
    for kind in ("diffusion", "ar"):
        r = _task(models, f"{kind}-pretrain", "infill", choice=True)
        hits[kind] = r.correct
        acc[kind] = Accuracy.of(r.correct)
        choice[kind] = r.choice_accuracy
        res[kind] = {**acc[kind].to_dict(), "choice_accuracy": r.choice_accuracy}
        examples += _examples(r, kind, 3)
    d, se = paired_difference(hits["diffusion"], hits["ar"])
    held = d > 2 * se
    n_people = models.recipe.world.n_people
    def mc(kind: str) -> str:
        return "—" if choice[kind] is None else f"{choice[kind]:.2f}"

    table = [["model", "generation (exact name)", "multiple choice of 4 (likelihood; one blank only)"],
             ["diffusion (sees both sides)", str(acc["diffusion"]), mc("diffusion")],
             ["autoregressive (left side only)", str(acc["ar"]), mc("ar")]]
    report = Report(
        "any-order",
        "A masked diffusion model fills a blank from the text on both sides; a left-to-right model "
        "cannot use what follows the blank when it generates.",
        "Section 2.4 / Table 4: infilling and reverse completion follow from the bidirectional mask predictor.",
        f"name before its clues: diffusion {acc['diffusion']}, AR {acc['ar']}",
        held,
        (f"Held: the diffusion model fills the name {d:.2f} ± {se:.2f} more often." if held else
         f"Did not hold at this scale: difference {d:+.2f} ± {se:.2f}."),
        table, res,
        notes=[f"Items: one held-out biography document per person ({n_people}), every mention of its person's "
               "name blanked; the name comes first, so every clue stands after the first blank. Generation: "
               "as many masks as the name has tokens at each blank (diffusion), scored at the first; the AR "
               "model continues the text before the first blank. Multiple choice (only when the name is "
               "mentioned once): log p(name | both sides) by Eq. 6 for diffusion, log p(name + rest | before) "
               "exactly for AR."],
        examples=examples)

    def plot(ax_fig: Any) -> None:
        _, ax = ax_fig
        kinds = ["diffusion", "ar"]
        ax.bar([0, 1], [acc[k].value for k in kinds], yerr=[acc[k].stderr for k in kinds], capsize=4,
               color=["tab:blue", "tab:orange"])
        ax.axhline(1 / n_people, color="grey", linestyle=":", label=f"a random name (1/{n_people})")
        ax.set_xticks([0, 1], ["diffusion", "autoregressive"])
        ax.set_ylabel("exact name filled")
        ax.set_ylim(0, 1.05)
        ax.legend()
    return report, plot


CLAIMS: dict[str, Callable[[Models], tuple[Report, Callable]]] = {
    "reversal": claim_reversal,
    "remasking": claim_remasking,
    "semi-ar": claim_semi_ar,
    "bound": claim_bound,
    "any-order": claim_any_order,
}


# ----------------------------------------------------------------------------------------- writing
def write(report: Report, plot: Callable, out: Path, context: dict[str, Any]) -> None:
    """OUT/report.md, OUT/NAME.png and OUT/results.json for one claim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot((fig, ax))
    ax.set_title(report.name)
    fig.tight_layout()
    png = out / f"{report.name}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    status = {True: "held", False: "did not hold", None: "measured (no pass/fail)"}[report.held]
    table = [f"| {' | '.join(report.table[0])} |", "|" + "---|" * len(report.table[0])]
    table += [f"| {' | '.join(row)} |" for row in report.table[1:]]
    lines = [f"# `llada reproduce {report.name}`", "",
             f"**Claim.** {report.claim}", "", f"**Paper.** {report.paper}", "",
             f"**Ours.** {report.ours}", "", f"**Result: {status}.** {report.verdict}", "", *table, "",
             f"![{report.name}]({png.name})", ""]
    lines += [*report.notes, ""]
    if report.examples:
        lines += ["Examples:", "", *[f"- {e}" for e in report.examples], ""]
    rec = context["recipe"]
    lines += ["Setup: " + ", ".join(f"{k} {v}" for k, v in context.items() if k not in ("recipe", "command")) + ".",
              f"Recipe: world {rec['world']}; model {rec['preset']}, {rec['pretrain_steps']} pretraining + "
              f"{rec['sft_steps']} SFT steps of batch {rec['batch_size']}, lr {rec['pretrain_lr']:g} / {rec['sft_lr']:g}.",
              f"Command: `{context['command']}`", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"claim": report.name, "held": report.held, "ours": report.ours,
                                                  "paper": report.paper, "results": report.results,
                                                  "table": report.table, **context}, indent=2, default=str) + "\n")


def reproduce(name: str, out_dir: str = "runs/reproduce", size: Literal["test", "default", "large"] = "default",
              seed: int = 0, diffusion: str | None = None, ar: str | None = None, device: str | None = None,
              progress: bool = True) -> list[Path]:
    """Reproduce one claim of the paper (or `all`) on the built-in world; write report, plot and results.

    Args:
        name: reversal, remasking, semi-ar, bound, any-order, or all
        out_dir: OUT_DIR/NAME/ gets report.md, NAME.png and results.json; OUT_DIR/models the models
        size: test (seconds: checks the machinery, measures nothing), default (about 15 minutes on
            2 CPU cores), large (a bigger world and model, for a GPU)
        seed: the world's seed and the training seed
        diffusion: reuse a diffusion model directory that llada sft fine-tuned on the size's world
            (its training_config.json says so; see llada.recipe) instead of training one; checked
            before anything is trained
        ar: reuse an autoregressive model directory of the same kind
        device: cpu, cuda, ... (default: cuda when available)
        progress: show progress bars
    """
    import sys

    import torch

    names = list(CLAIMS) if name == "all" else [name]
    unknown = [n for n in names if n not in CLAIMS]
    if unknown:
        raise UserError(f"unknown claim {name!r}; choose one of: {', '.join(CLAIMS)}, all")
    if size not in SIZES:
        raise UserError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    recipe = RECIPES[SIZES[size]]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    given = {k: v for k, v in (("diffusion", diffusion), ("ar", ar)) if v}
    check_given(given, names, seed, size, recipe)
    root = Path(out_dir)
    models = Models(root / "models" / f"{size}-seed{seed}", recipe, seed, device, given, progress)
    written = []
    for n in names:
        started = time.perf_counter()
        print(f"reproduce {n}: training what it needs, then measuring")
        report, plot = CLAIMS[n](models)
        context = {"size": size, "seed": seed, "device": device, "torch": torch.__version__,
                   "minutes (training models not yet trained, then measuring)":
                       round((time.perf_counter() - started) / 60, 2),
                   "date": time.strftime("%Y-%m-%d"), "recipe": asdict(recipe),
                   "command": "llada reproduce " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["reproduce"] else [n])}
        write(report, plot, root / n, context)
        status = {True: "held", False: "did not hold", None: "measured"}[report.held]
        print(f"{n}: {status}: {report.ours}\n  report: {root / n / 'report.md'}")
        written.append(root / n)
    return written

"""The built-in tasks on the built-in world, for a diffusion model or its autoregressive baseline.

    fact_forward   "What did P invent?"        group B's inventions, asked the way SFT taught
    fact_reverse   "Who invented the T?"       the same facts asked backwards (the reversal curse)
    fact_held_out  "Where does P live?"        the question SFT held out for each person
    arithmetic     "What is 81 - 24?"          held-out sums
    infill         "___ lives in C. ___ ..."   a held-out biography with its person's name blanked
                                               everywhere (the AR model sees the left only)

Each task is scored two ways: generation (the expected answer appears in the decoded response)
and multiple choice (the option with the highest log-likelihood: Eq. 6 for diffusion, exact for AR).
For infill the diffusion model scores log p(option | prefix, suffix), seeing both sides, and the AR
model log p(option + suffix | prefix); an exact model ranks the options the same either way, and
the first leaves Eq. 6 only the option's few tokens to mask, so its estimate is far less noisy.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from llada.data.world import EVAL_TASKS, World, WorldConfig
from llada.errors import UserError
from llada.likelihood import choose, nll_bound
from llada.sampling import SamplerOptions, infill, sample
from llada.sampling.api import options_used
from llada.sampling.autoregressive import generate_autoregressive
from llada.sampling.text import decode_response, encode_prompts, left_pad
from llada.tokenizer import encode, render_chat


def label(options: SamplerOptions) -> str:
    """A short name of one point of an ablation grid."""
    o = options.explicit()
    return (f"steps={o.steps} block={o.block_length} {o.remasking}"
            + (f" cfg={o.cfg_scale:g}" if o.cfg_scale else "")
            + (f" T={o.temperature:g}" if o.temperature else ""))


@dataclass
class TaskResult:
    model: str
    kind: str  # "diffusion" or "autoregressive"
    task: str
    setting: dict[str, Any]
    n: int
    generation_accuracy: float
    choice_accuracy: float | None = None
    seconds: float = 0.0
    forwards: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    """Per item: whether the generated response contains the answer."""
    responses: list[str] = field(default_factory=list)


def check_tasks(tasks: list[str]) -> list[str]:
    unknown = [t for t in tasks if t not in EVAL_TASKS]
    if unknown:
        raise UserError(f"unknown task(s) {', '.join(unknown)}; built-in tasks are {', '.join(EVAL_TASKS)}")
    return tasks


def grid(steps: list[int], block_length: list[int], remasking: list[str], cfg_scale: list[float],
         gen_length: int, temperature: float) -> list[SamplerOptions]:
    """Every combination of the given ablation values (block lengths longer than gen_length mean
    one block); GenerationError names a combination the sampler cannot run."""
    out = [SamplerOptions(gen_length=gen_length, steps=s, block_length=min(b, gen_length), remasking=r,
                          cfg_scale=c, temperature=temperature)
           for s, b, r, c in itertools.product(steps, block_length, remasking, cfg_scale)]
    return list(dict.fromkeys(out))


def _chat_prompt(tokenizer: Any, question: str) -> list[int]:
    return encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": question}]))


def _bos(tokenizer: Any) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


BATCH_SIZE = 16  # prompts sampled together by run_task (left padded)


@torch.no_grad()
def run_task(bundle: Any, task: str, setting: SamplerOptions, world: World, *, limit: int | None = None,
             mc_num: int = 32, choice: bool = True, name: str = "model") -> TaskResult:
    """Score `bundle` (a loaded model directory) on one built-in task of `world` (its first `limit`
    items): generation sampled with `setting`, BATCH_SIZE prompts at a time, and with `choice` also
    multiple choice by Eq. 6 estimates of `mc_num` samples; the noise is seeded with `world.seed`.
    Raises UserError when the world has no items for the task (a world without sums: arithmetic).
    """
    seed = world.seed
    model, tok = bundle.model, bundle.tokenizer
    causal = model.config.kind == "autoregressive"  # infill and choice are posed differently to it
    items = world.eval_items(task, limit=limit)
    if not items:
        raise UserError(f"the world has no {task} items (its n_sums is 0?); choose other --tasks")
    roles = model.config.roles
    started = time.perf_counter()
    forwards = 0
    texts: list[str] = []
    gen = torch.Generator(device=model.device).manual_seed(seed)
    for lo in range(0, len(items), BATCH_SIZE):
        chunk = items[lo: lo + BATCH_SIZE]
        if task == "infill":
            texts_chunk, f = _infill(model, tok, chunk, setting, causal, gen)
        else:
            ids, am = encode_prompts(tok, [it["prompt"] for it in chunk], pad_id=roles.pad, chat=True)
            out = sample(model, ids, setting, attention_mask=am, generator=gen)
            texts_chunk = [decode_response(tok, r, roles.stops) for r in out.responses]
            f = out.stats.forwards
        texts += texts_chunk
        forwards += f
    hits = [it["answer"].lower() in t.lower() for it, t in zip(items, texts, strict=True)]

    choice_acc = None
    if task == "infill" and any(len(it["segments"]) > 2 for it in items):
        choice = False  # several blanks: Eq. 6 scores one span, so only generation is scored
    if choice:
        correct = 0
        g = torch.Generator().manual_seed(seed)
        for it in items:
            suffix: list[int] = []
            if task == "infill":
                before, after = it["segments"]
                prompt = _bos(tok) + encode(tok, before.rstrip())
                opts = [encode(tok, (" " if before.strip() else "") + o) for o in it["options"]]
                if causal:  # it cannot see the suffix, so it scores option + suffix
                    opts = [o + encode(tok, after) for o in opts]
                else:
                    suffix = encode(tok, after)
            else:
                prompt = _chat_prompt(tok, it["prompt"])
                opts = [encode(tok, o) for o in it["options"]]
            pick = choose(model, prompt, opts, suffix=suffix, mc_num=mc_num, batch_size=max(mc_num, 32),
                          cfg_scale=setting.cfg_scale if not causal else 0.0, generator=g)
            correct += pick.index == it["label"]
        choice_acc = correct / len(items)

    return TaskResult(name, model.config.kind, task, options_used(model, setting), len(items),
                      sum(hits) / len(items), choice_acc, time.perf_counter() - started, forwards,
                      [{"prompt": it["prompt"], "answer": it["answer"], "response": t}
                       for it, t in list(zip(items, texts, strict=True))[:3]], hits, texts)


def _infill_row(tok: Any, item: dict, mask_id: int) -> tuple[list[int], int, int]:
    """BOS + the item's text with each blank as masks (as many as the answer has tokens there);
    returns the ids, and the start and length of the first blank."""
    ids, first = _bos(tok), None
    segments = item["segments"]
    for k, segment in enumerate(segments):
        if k == len(segments) - 1:
            ids += encode(tok, segment) if segment else []
            break
        before = segment.rstrip()  # the space before a blank belongs to the answer's first token
        ids += encode(tok, before) if before else []
        n = len(encode(tok, (" " if before else "") + item["answer"]))
        first = first or (len(ids), n)
        ids += [mask_id] * n
    return ids, *first


def _infill(model: Any, tok: Any, chunk: list[dict], setting: SamplerOptions, causal: bool,
            gen: torch.Generator) -> tuple[list[str], int]:
    """Fill the blanks of each item; returns the text of each first blank. Diffusion: as many masks
    as the answer has tokens at every blank, the whole text visible. AR: continue the text before
    the first blank for that many tokens (it cannot see what follows)."""
    mask_id = model.config.roles.mask
    rows, firsts = [], []
    for it in chunk:
        ids, start, n = _infill_row(tok, it, mask_id)
        rows.append(ids)
        firsts.append((start, n))
    pad = model.config.roles.pad
    if causal:
        ids, am = left_pad([r[:start] for r, (start, _) in zip(rows, firsts, strict=True)], pad)
        out = generate_autoregressive(model, ids, am, gen_length=max(n for _, n in firsts), generator=gen)
        texts = [tok.decode(out.responses[i, :n].tolist(), skip_special_tokens=True).strip()
                 for i, (_, n) in enumerate(firsts)]
        return texts, out.stats.forwards
    ids, am = left_pad(rows, pad)
    width = ids.shape[1]
    out = infill(model, ids, am, remasking=setting.remasking, temperature=setting.temperature, generator=gen)
    texts = []
    for i, (start, n) in enumerate(firsts):
        at = width - len(rows[i]) + start
        texts.append(tok.decode(out.sequences[i, at: at + n].tolist(), skip_special_tokens=True).strip())
    return texts, out.stats.forwards


@torch.no_grad()
def heldout_likelihood(bundle: Any, *, seed: int = 0, world: WorldConfig | None = None, limit: int = 64,
                       mc_num: int = 32, batch_size: int = 32) -> dict[str, float]:
    """Negative log-likelihood of held-out world documents: an upper bound (Eq. 4) for diffusion,
    exact for AR. Per token, as perplexity and as bits per byte."""
    model, tok = bundle.model, bundle.tokenizer
    docs = World(seed, world).pretrain_documents("validation")[:limit]
    max_len = model.config.max_sequence_length - 1
    texts = [encode(tok, d)[:max_len] for d in docs]
    nbytes = sum(len(tok.decode(t).encode()) for t in texts)
    rep = nll_bound(model, texts, bytes_total=nbytes, prefix=_bos(tok), mc_num=mc_num, batch_size=batch_size,
                    generator=torch.Generator().manual_seed(seed))
    return {"nll_per_token": rep.nll_per_token, "stderr_per_token": rep.stderr / max(1, rep.tokens),
            "perplexity": rep.perplexity, "bits_per_byte": rep.bits_per_byte, "tokens": rep.tokens,
            "exact": model.config.kind == "autoregressive"}


def summary_line(r: TaskResult) -> str:
    mc = "-" if r.choice_accuracy is None else f"{r.choice_accuracy:.3f}"
    return f"{r.model:<12} {r.task:<13} gen {r.generation_accuracy:.3f}  choice {mc}  ({r.n} items, {r.seconds:.1f}s)"


__all__ = ["TaskResult", "label", "check_tasks", "grid", "heldout_likelihood", "run_task", "summary_line"]

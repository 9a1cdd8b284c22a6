"""`llada eval`: built-in tasks, ablations and the autoregressive baseline, side by side.

    llada eval --model runs/quickstart/sft/model
    llada eval --model runs/quickstart/sft/model --baseline runs/quickstart-ar/sft/model \\
        --steps 8,16,32 --remasking low_confidence,random --block_length 8,32 --cfg_scale 0,0.5

Writes `report.md`, `report.png` (accuracy against steps) and `results.json` into --out_dir
(default: runs/eval/NAME under the current directory, NAME from the model's path); never into the
model directory, which may be read-only.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llada.checkpoint.options import inference_options
from llada.commands.flags import load_flags, output_dir
from llada.data.world import World, WorldConfig
from llada.errors import UserError


def _ints(text: str | int, name: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{name} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"--{name} values must be >= 1, got {text!r}")
    return values


def _floats(text: str | float, name: str) -> list[float]:
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{name} takes comma-separated numbers, got {text!r}") from None


def default_out_dir(model: str) -> Path:
    """runs/eval/NAME under the current directory, NAME from the model path's last parts
    (runs/quickstart/sft/model: quickstart-sft-model; GSAI-ML/LLaDA-8B-Base: GSAI-ML-LLaDA-8B-Base)."""
    parts = [p for p in Path(model).expanduser().parts if p not in (Path(model).anchor, ".", "..", "runs")]
    return Path("runs") / "eval" / ("-".join(parts[-3:]) or "model")


@load_flags
def evaluate(model: str = "runs/quickstart/sft/model", baseline: str | None = None,
             tasks: str = "fact_forward,fact_reverse,arithmetic,infill",
             steps: str | None = None, gen_length: int | None = None, block_length: str | None = None,
             remasking: str | None = None, cfg_scale: str | None = None, temperature: float | None = None,
             limit: int | None = 100, mc_num: int = 16,
             choice: bool = True, likelihood_docs: int = 64, seed: int | None = None,
             world: WorldConfig | None = None, out_dir: str | None = None, **flags: Any) -> Path:
    """Score a model on the built-in tasks, with optional ablations and an AR baseline.

    Args:
        model: the diffusion model directory
        baseline: an autoregressive model directory (trained with --objective ar) to compare with
        tasks: comma list of fact_forward, fact_reverse, arithmetic, infill
        steps: comma list of step counts (an ablation when several)
        gen_length: response length
        block_length: comma list of block lengths (semi-autoregressive when < gen_length)
        remasking: comma list of low_confidence, random, margin, entropy
        cfg_scale: comma list of classifier-free guidance scales
        temperature: sampling temperature (0 = deterministic)
            (each of these six defaults to the built-in world's sampler, llada.recipe.SAMPLER:
            32 tokens, one per step, blocks of 16, low-confidence remasking, no guidance, greedy)
        limit: items per task (None = all)
        mc_num: Monte-Carlo samples per option for multiple choice (Eq. 6)
        choice: also score multiple choice by likelihood
        likelihood_docs: held-out documents for the likelihood comparison (0 = skip)
        seed: the world's seed and the sampling seed (default: the seed the model was trained with)
        world: the built-in world's size (default: the world the model was trained on, as its
            training_config.json records; --world.n_people 24 to choose one)
        out_dir: where to write the report (default: runs/eval/NAME, NAME from the model's path)
    """
    from llada.checkpoint import load
    from llada.evaluation.builtin import check_tasks, grid, heldout_likelihood, label, run_task, summary_line
    from llada.evaluation.report import write_report
    from llada.recipe import SAMPLER
    from llada.sampling.remasking import REMASKING

    steps = SAMPLER.num_steps if steps is None else steps
    gen_length = SAMPLER.gen_length if gen_length is None else gen_length
    block_length = SAMPLER.block_size if block_length is None else block_length
    remasking = SAMPLER.remasking if remasking is None else remasking
    cfg_scale = SAMPLER.cfg_scale if cfg_scale is None else cfg_scale
    temperature = SAMPLER.temperature if temperature is None else temperature
    if seed is not None and not 0 <= seed < 2**63:
        raise UserError(f"--seed must be an integer in [0, 2**63), got {seed}")
    task_list = check_tasks([t.strip() for t in tasks.split(",") if t.strip()])
    strategies = [r.strip() for r in remasking.split(",") if r.strip()]
    for r in strategies:
        if r not in REMASKING:
            raise UserError(f"--remasking {r!r} is unknown; choose from {', '.join(REMASKING)}")
    settings = grid(_ints(steps, "steps"), _ints(block_length, "block_length"), strategies,
                    _floats(cfg_scale, "cfg_scale"), gen_length, temperature)
    from llada.training.config import trained_world

    how = inference_options(flags)
    out = output_dir(out_dir if out_dir else default_out_dir(model))
    trained = trained_world(model)
    if seed is None:
        seed = trained[0] if trained else 0
    if world is None:
        world = trained[1] if trained else WorldConfig()
    models = [("diffusion", model)] + ([("autoregressive", baseline)] if baseline else [])
    results, likelihood = [], {}
    for wanted, path in models:
        bundle = load(path, how if path == model else how.replace(revision=None))  # --revision: of --model
        kind = bundle.model.config.kind
        if kind != wanted:
            flag, want = ("--model", "a diffusion model") if wanted == "diffusion" else \
                ("--baseline", "an autoregressive model (trained with --objective ar)")
            raise UserError(f"{path} is a {kind} model, but {flag} must be {want}")
        for task in task_list:
            for s in settings if kind == "diffusion" else settings[:1]:
                r = run_task(bundle, task, s, World(seed, world), limit=limit, mc_num=mc_num, choice=choice,
                             name=kind)
                print(summary_line(r) + ("" if kind != "diffusion" or len(settings) == 1 else f"  [{label(s)}]"))
                results.append(r)
        if likelihood_docs:
            likelihood[kind] = heldout_likelihood(bundle, seed=seed, world=world, limit=likelihood_docs,
                                                  mc_num=mc_num)
            lk = likelihood[kind]
            print(f"{kind:<12} held-out NLL {'=' if lk['exact'] else '<='} {lk['nll_per_token']:.3f} nats/token "
                  f"(ppl {lk['perplexity']:.2f}, {lk['bits_per_byte']:.3f} bits/byte)")
        del bundle
    (out / "results.json").write_text(json.dumps({"tasks": [asdict(r) for r in results],
                                                   "likelihood": likelihood}, indent=2))
    write_report(out, results, likelihood)
    print(f"report: {out / 'report.md'} and {out / 'report.png'}")
    return out

"""`llada poem`: forward and reverse accuracy on reversal-poem couplets (Table 4); the task itself
(couplets, prompts, scoring) is `llada/evaluation/poem.py`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from llada.checkpoint import load
from llada.checkpoint.options import inference_options
from llada.commands.flags import load_flags, output_dir
from llada.errors import UserError
from llada.evaluation.poem import DIRECTIONS, build_items, load_couplets, report, score, summarize
from llada.sampling import SamplerOptions, sample_text


@load_flags
def poem_eval(model: str, data: str, out_dir: str = "runs/poem", gen_length: int = 28, steps: int | None = None,
              block_length: int | None = None, cfg_scale: float = 0.0, logits_eos_inf: bool = True,
              batch_size: int = 16, limit: int | None = None, **flags: Any) -> dict[str, dict[str, float]]:
    """Forward and reverse accuracy of a model on poem couplets (Table 4); writes results.json and report.md.

    Args:
        model: a model directory or Hub name (e.g. GSAI-ML/LLaDA-8B-Instruct)
        data: a JSON list of {"first", "second"} couplets (the format of the reference data/poem_data.json)
        out_dir: where results.json (settings, accuracies, every answer) and report.md go
        gen_length: answer length in tokens (28 in the reference)
        steps: denoising steps (default gen_length, as in the reference)
        block_length: semi-autoregressive block (default gen_length: one block)
        cfg_scale: unsupervised classifier-free guidance (0 in the reference)
        logits_eos_inf: never generate EOS (the reference's --eos_inf, used in EVAL.md)
        batch_size: prompts answered together (left padded; greedy answers do not depend on it)
        limit: use only the first LIMIT couplets

    Returns {"forward": {...}, "reverse": {...}} with n, accuracy, accuracy_se, exact, exact_se.
    Raises DataError for a bad data file, UserError / GenerationError for bad settings.
    """
    how = inference_options(flags)
    couplets = load_couplets(data)
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit must be >= 1, got {limit}")
        couplets = couplets[:limit]
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    options = SamplerOptions(gen_length=gen_length, steps=steps, block_length=block_length, cfg_scale=cfg_scale,
                             logits_eos_inf=logits_eos_inf)
    out = output_dir(out_dir)
    bundle = load(model, how)
    net, tok = bundle.model.eval(), bundle.tokenizer

    items = [it for d in DIRECTIONS for it in build_items(couplets, d)]
    responses: list[str] = []
    for lo in range(0, len(items), batch_size):
        prompts = [it.prompt for it in items[lo: lo + batch_size]]
        responses += sample_text(net, tok, prompts, options, chat=True)  # left to right for an AR baseline

    records = []
    for it, resp in zip(items, responses, strict=True):
        hit, exact = score(resp, it.answer)
        records.append({**asdict(it), "response": resp, "hit": hit, "exact": exact})
    summary = summarize(records)
    settings = {"model": model, "data": str(data), **options.to_dict(), "steps": options.num_steps,
                "block_length": options.block_size, "chat_template": True, "couplets": len(couplets)}
    (out / "results.json").write_text(json.dumps({"settings": settings, "summary": summary, "items": records},
                                                 ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "report.md").write_text(report(settings, summary), encoding="utf-8")
    for d in DIRECTIONS:
        s = summary[d]
        print(f"{d:>8}: {s['accuracy']:.3f} ± {s['accuracy_se']:.3f}  (exact {s['exact']:.3f}, n={s['n']})")
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return summary

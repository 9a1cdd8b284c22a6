"""Sampler throughput: tokens/s, forward passes, tokens per forward and peak memory (prints a table).

    python bench/generate.py --preset small                                  # CPU, random weights
    python bench/generate.py --model runs/quickstart/sft/model --quality     # a trained model: + agreement
    python bench/generate.py --preset llada-8b --dtype bfloat16 --batch 1,8,32 --compile   # one GPU

Settings, side by side in one run (prompt `--prompt-len`, `--gen-length` tokens, blocks of 32):
    reference        steps = gen_length, low-confidence remasking (LLaDA's generate.py)
    ref+early-exit   the same, stopping once every row's finished block holds EOS
    threshold 0.9    Fast-dLLM confidence-threshold parallel decoding
    prefix+thr 0.9   ... with the prefix key/value cache
    dual+thr 0.9     ... with the dual (prefix + suffix) cache

With random weights the threshold rules rarely fire (flat predictions): those rows then measure
cache speed at one token per forward. `--quality` (needs `--model`) adds, per setting, the share of
response tokens equal to the reference setting's output and the built-in arithmetic accuracy.
"""

from __future__ import annotations

import argparse
import time

import torch

from llada.config import preset
from llada.model import LLaDAModel
from llada.runtime import compile_blocks
from llada.sampling import generate

SETTINGS = {
    "reference": {},
    "ref+early-exit": {"early_exit": True},
    "threshold 0.9": {"threshold": 0.9},
    "prefix+thr 0.9": {"threshold": 0.9, "cache": "prefix"},
    "dual+thr 0.9": {"threshold": 0.9, "cache": "dual"},
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(args) -> tuple[LLaDAModel, object | None]:
    if args.model:
        from llada.checkpoint import load

        bundle = load(args.model, dtype=args.dtype, device=args.device)
        return bundle.model.eval(), bundle.tokenizer
    v = args.vocab
    cfg = preset(args.preset, vocab_size=v, mask_token_id=v - 1, eos_token_id=v - 2, pad_token_id=v - 2,
                 bos_token_id=v - 3, eot_token_id=v - 4, max_sequence_length=args.prompt_len + args.gen_length)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LLaDAModel(cfg)
    return model.to(getattr(torch, args.dtype)).eval(), None


def prompts(args, model: LLaDAModel, tokenizer, batch: int) -> tuple[torch.Tensor, torch.Tensor | None, list]:
    if tokenizer is None:
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, model.config.vocab_size - 4, (batch, args.prompt_len), generator=g), None, []
    from llada.data.world import World
    from llada.sampling.text import encode_prompts

    items = World(seed=0).eval_items("arithmetic", limit=batch)
    ids, mask = encode_prompts(tokenizer, [it["prompt"] for it in items], pad_id=model.config.roles.pad)
    return ids, mask, items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--model", default=None, help="a model directory instead of a random preset")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen-length", type=int, default=256)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--batch", default="1", help="comma list of batch sizes")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="compile each block first (llada.load(..., compile=True))")
    p.add_argument("--quality", action="store_true")
    args = p.parse_args()

    model, tokenizer = build(args)
    if args.compile:
        compile_blocks(model)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {name}; model {args.model or args.preset} ({model.config.num_params() / 1e6:.1f}M, {args.dtype}); "
          f"gen_length {args.gen_length}, block {args.block_length}")
    print(f"{'setting':<16} {'batch':>5} {'tokens/s':>9} {'s/call':>8} {'full':>5} {'cached':>6} {'tok/fwd':>7} "
          f"{'peak GiB':>8}" + (f" {'agree':>6} {'acc':>5}" if args.quality else ""))
    for batch in [int(b) for b in args.batch.split(",")]:
        ids, mask, items = prompts(args, model, tokenizer, batch)
        gen_length = args.gen_length
        reference = None
        for key in args.settings.split(","):
            kw = SETTINGS[key.strip()]
            common = dict(steps=gen_length, gen_length=gen_length, block_length=args.block_length, **kw)
            generate(model, ids, mask, **common)  # warm-up (and compilation)
            _sync(args.device)
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            for _ in range(args.repeats):
                out = generate(model, ids, mask, **common)
            _sync(args.device)
            seconds = (time.perf_counter() - t) / args.repeats
            st = out.stats
            peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
            line = (f"{key:<16} {batch:>5} {st.tokens / seconds:>9.1f} {seconds:>8.2f} {st.full_forwards:>5} "
                    f"{st.cached_forwards:>6} {st.tokens_per_forward:>7.2f} {peak:>8.2f}")
            if args.quality and tokenizer is not None:
                resp = out.responses
                reference = resp if reference is None else reference
                agree = (resp == reference).float().mean().item()
                texts = tokenizer.batch_decode(resp, skip_special_tokens=True)
                acc = sum(it["answer"] in t for it, t in zip(items, texts, strict=True)) / len(items)
                line += f" {agree:>6.3f} {acc:>5.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()

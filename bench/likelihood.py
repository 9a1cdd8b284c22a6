"""Monte-Carlo likelihood throughput (Eq. 6) and a multiple-choice task's wall time (prints a table).

    python bench/likelihood.py --model runs/quickstart/sft/model            # CPU
    python bench/likelihood.py --preset llada-8b --dtype bfloat16 --mc-batch 64   # one GPU, random weights

samples/s counts Monte-Carlo samples (one masked copy of prompt + response each) per second.
The multiple-choice row scores the built-in `fact_forward` task (4 options per item) with
`--mc-num` samples per option, as `llada eval` and the lm-eval adapter do.
"""

from __future__ import annotations

import argparse
import time

import torch

from llada.config import preset
from llada.likelihood import log_likelihoods
from llada.model import LLaDAModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--preset", default="small")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--response-len", type=int, default=32)
    p.add_argument("--mc-num", type=int, default=32)
    p.add_argument("--mc-batch", default="8,32")
    p.add_argument("--items", type=int, default=20)
    args = p.parse_args()

    bundle = None
    if args.model:
        from llada.checkpoint import load

        bundle = load(args.model, dtype=args.dtype, device=args.device)
        model = bundle.model.eval()
    else:
        v = 32000 if args.preset in ("1b", "llada-8b") else 4096
        cfg = preset(args.preset, vocab_size=v, mask_token_id=v - 1, eos_token_id=v - 2, pad_token_id=v - 2,
                     bos_token_id=v - 3, eot_token_id=v - 4)
        with torch.device(args.device):
            model = LLaDAModel(cfg).to(getattr(torch, args.dtype)).eval()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {name}; model {args.model or args.preset} ({model.config.num_params() / 1e6:.1f}M, {args.dtype}); "
          f"prompt {args.prompt_len} + response {args.response_len}, mc_num {args.mc_num}")
    g = torch.Generator().manual_seed(0)
    V = model.config.vocab_size - 8
    pairs = [(torch.randint(0, V, (args.prompt_len,), generator=g).tolist(),
              torch.randint(0, V, (args.response_len,), generator=g).tolist()) for _ in range(4)]
    print(f"{'what':<28} {'mc batch':>8} {'samples/s':>10} {'seconds':>8}")
    for mb in [int(b) for b in args.mc_batch.split(",")]:
        log_likelihoods(model, pairs[:1], mc_num=mb, batch_size=mb)  # warm-up
        t = time.perf_counter()
        log_likelihoods(model, pairs, mc_num=args.mc_num, batch_size=mb)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        s = time.perf_counter() - t
        print(f"{'Eq. 6 estimate':<28} {mb:>8} {len(pairs) * args.mc_num / s:>10.1f} {s:>8.2f}")
    if bundle is not None:
        from llada.data.world import World
        from llada.evaluation.builtin import run_task
        from llada.recipe import SAMPLER

        t = time.perf_counter()
        r = run_task(bundle, "fact_forward", SAMPLER, World(), limit=args.items, mc_num=args.mc_num)
        s = time.perf_counter() - t
        print(f"{'fact_forward MC + generation':<28} {'-':>8} {'-':>10} {s:>8.2f}   "
              f"({r.n} items, choice acc {r.choice_accuracy:.2f}, generation acc {r.generation_accuracy:.2f})")


if __name__ == "__main__":
    main()

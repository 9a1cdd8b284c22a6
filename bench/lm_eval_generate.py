"""Throughput of the lm-eval adapter's generate_until at several --batch_size values (prints a table).

    python bench/lm_eval_generate.py --model runs/quickstart/sft/model                 # CPU
    python bench/lm_eval_generate.py --model DIR --device cuda --batch-sizes 1,8,32 --requests 128

The requests are the built-in fact_forward questions, sent as lm-eval sends a generate_until task
(the question as context, `until` and `max_gen_toks` as generation kwargs).
"""

from __future__ import annotations

import argparse
import time

from lm_eval.api.instance import Instance

from llada.data.world import World
from llada.evaluation.harness import LLaDAEvalLM


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--gen-length", type=int, default=32)
    p.add_argument("--block-length", type=int, default=16)
    args = p.parse_args()

    questions = [it["prompt"] for it in World(seed=0).eval_items("fact_forward")]
    questions = (questions * (args.requests // len(questions) + 1))[: args.requests]
    print(f"{args.requests} requests, steps {args.steps}, gen_length {args.gen_length}, "
          f"block_length {args.block_length}, {args.device}")
    print(f"{'batch_size':>10} {'seconds':>8} {'req/s':>7}")
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        lm = LLaDAEvalLM(args.model, device=args.device, batch_size=bs, steps=args.steps,
                         gen_length=args.gen_length, block_length=args.block_length)
        reqs = [Instance("generate_until", {}, (q, {"until": ["\n"], "max_gen_toks": args.gen_length}), i)
                for i, q in enumerate(questions)]
        started = time.perf_counter()
        lm.generate_until(reqs, disable_tqdm=True)
        seconds = time.perf_counter() - started
        print(f"{bs:>10} {seconds:>8.2f} {len(reqs) / seconds:>7.1f}")


if __name__ == "__main__":
    main()

"""The training loss on its own: time and peak memory of the masked cross-entropy, forward and
backward, against the masked-row selection (`logits[masked]`, LLaDA's guidelines) it replaced.

    python bench/loss.py                                      # CPU: peak RSS, one process per variant
    python bench/loss.py --device cuda --batch 8 --seq-len 2048 --vocab 126464

`masked_cross_entropy` scores every row in float32 chunks and keeps one log-sum-exp per row for the
backward pass; the selection scores only the masked rows but makes the host wait for their count
and keeps their (N, V) float32 log-softmax until the backward pass.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from llada.diffusion import masked_cross_entropy


def selected_rows(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The replaced form: only the masked rows, upcast, through F.cross_entropy."""
    ce = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    return ce.masked_scatter(masked, F.cross_entropy(logits[masked].float(), targets[masked], reduction="none"))


VARIANTS = {"chunked (now)": masked_cross_entropy, "logits[masked]": selected_rows}


def run(args: argparse.Namespace, name: str) -> None:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    g = torch.Generator(device).manual_seed(0)
    shape = (args.batch, args.seq_len)
    logits = torch.randn(*shape, args.vocab, generator=g, device=device, dtype=dtype).requires_grad_()
    targets = torch.randint(0, args.vocab, shape, generator=g, device=device)
    masked = torch.rand(shape, generator=g, device=device) < 0.5  # t ~ U(0, 1): half masked on average
    fn = VARIANTS[name]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the first call: RSS only rises
    fn(logits, targets, masked).sum().backward()  # warm-up
    logits.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss
    start = time.perf_counter()
    for _ in range(args.repeats):
        fn(logits, targets, masked).sum().backward()
        logits.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    ms = (time.perf_counter() - start) / args.repeats * 1e3
    logits_mib = logits.numel() * logits.element_size() / 2**20
    print(f"{name:<16} {ms:>9.1f} {peak / 2**20:>12.0f} {logits_mib:>11.0f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variant", help=argparse.SUPPRESS)  # one variant in this process (CPU peak RSS)
    args = p.parse_args()
    if args.variant:
        return run(args, args.variant)
    print(f"device {args.device}, {args.dtype} logits ({args.batch}, {args.seq_len}, {args.vocab}), "
          f"half masked; peak: memory above the logits, forward + backward")
    print(f"{'variant':<16} {'ms/step':>9} {'peak MiB':>12} {'logits MiB':>11}")
    for name in VARIANTS:
        if args.device == "cpu":  # peak RSS only rises: each variant in a fresh process
            subprocess.run([sys.executable, *sys.argv, "--variant", name], check=True)
        else:
            run(args, name)


if __name__ == "__main__":
    main()

"""Training throughput, model FLOPs utilisation and peak memory of the Eq. 3 step (prints a table).

    python bench/train.py --preset tiny --seq-len 128 --batch 16                    # CPU
    python bench/train.py --preset 1b --seq-len 2048 --batch 8 --measure-peak \\
        --variants eager,compile,compile+ckpt                                       # one GPU

FLOPs per trained token (forward + backward = 3 x forward, matmuls only; embeddings are lookups):
    6 * N_blocks                      every block weight (q, k, v, out, gate, up, down) once per token
  + 6 * d_model * embedding_size      the output head
  + 12 * n_layers * seq_len * d_model attention scores and weighted values (QK^T and AV: 2 * 2 * L * d
                                      per token per layer forward); no causal halving: attention is
                                      bidirectional, every query sees every key.
MFU = FLOPs/token * tokens/s / peak FLOP/s, with the peak measured by a large bf16 matmul
(`--measure-peak`) or given (`--peak-tflops`).
"""

from __future__ import annotations

import argparse
import time

import torch

from llada.config import preset
from llada.diffusion import pretrain_loss
from llada.model import LLaDAModel
from llada.runtime import prepare_model


def flops_per_token(cfg, seq_len: int) -> float:
    block_params = cfg.num_params(embeddings=False) - cfg.d_model  # minus the final norm
    return 6 * block_params + 6 * cfg.d_model * cfg.embedding_size + 12 * cfg.n_layers * seq_len * cfg.d_model


def measure_peak_tflops(device: str, n: int = 8192, iters: int = 50) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e12


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_variant(name: str, args, device: str) -> dict:
    cfg = preset(args.preset, vocab_size=args.vocab, mask_token_id=args.vocab - 1, eos_token_id=args.vocab - 2,
                 pad_token_id=args.vocab - 2, bos_token_id=args.vocab - 3, eot_token_id=args.vocab - 4,
                 max_sequence_length=max(args.seq_len, 256))
    torch.manual_seed(0)
    model = LLaDAModel(cfg).to(device).train()
    module = prepare_model(model, compile="compile" in name, activation_checkpointing="ckpt" in name)
    fused = device.startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    ids = torch.randint(0, args.vocab - 4, (args.batch, args.seq_len), device=device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.startswith("cuda") \
        else torch.autocast(device_type="cpu", enabled=False)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with amp:
            out = pretrain_loss(module, ids, cfg.mask_token_id, generator=gen)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t) / args.steps
    tokens_per_s = args.batch * args.seq_len / seconds
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return {"variant": name, "params_M": cfg.num_params() / 1e6, "step_ms": seconds * 1e3,
            "tokens_per_s": tokens_per_s, "tflops": flops_per_token(cfg, args.seq_len) * tokens_per_s / 1e12,
            "peak_GiB": peak_mem}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", default="eager", help="comma list of eager, compile, ckpt, compile+ckpt")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--measure-peak", action="store_true")
    args = p.parse_args()
    peak = measure_peak_tflops(args.device) if args.measure_peak else args.peak_tflops
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    print(f"device: {name}; preset {args.preset}, seq_len {args.seq_len}, micro-batch {args.batch}"
          + (f"; measured bf16 peak {peak:.0f} TFLOP/s" if peak else ""))
    print(f"{'variant':<14} {'params':>8} {'step ms':>9} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9}")
    for v in args.variants.split(","):
        r = run_variant(v.strip(), args, args.device)
        mfu = f"{100 * r['tflops'] / peak:.1f}%" if peak else "-"
        print(f"{r['variant']:<14} {r['params_M']:>7.1f}M {r['step_ms']:>9.1f} {r['tokens_per_s']:>10,.0f} "
              f"{r['tflops']:>8.3f} {mfu:>6} {r['peak_GiB']:>9.2f}")


if __name__ == "__main__":
    main()

"""Resident weight memory of a model loaded in full precision, int8 and int4 (prints a table).

    python bench/quantized_memory.py                        # preset 100m, float32 directory, CPU
    python bench/quantized_memory.py --preset small --schemes none,int8

The model (random weights, seed 0) is saved once with `llada.save`; each row then loads that
directory with `llada.load(dir, quantization=...)` in a fresh Python process that has imported
everything first. "weights" adds up the bytes every parameter and buffer holds (for a quantized
weight: its integer data, scales and zero points), split into the blocks' Linear layers (what
quantization replaces) and the rest (embedding, output head, norms: kept in float32): the resident
weight memory, exactly. The process's resident memory after five forward passes, above what it
held after its imports, is split as /proc reports it: "anon", memory the process allocated (the
quantized weights, activations), and "file", pages of the safetensors file, which the loader maps
rather than copies: a float32 weight is resident once read (the embedding's only in the rows looked
up), and the float32 block weights read to be quantized stay mapped, clean pages the OS may drop.
"peak" is the high-water mark of both (the full-precision weights pass through memory on their way
to being quantized). "forward" times one forward pass of 1 x 256 tokens (median of 5); "logits L2" is
||logits - logits_fp32|| / ||logits_fp32|| on those tokens (random weights: a rough guide only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MiB = 2**20


def _memory() -> dict[str, int]:
    """RssAnon, RssFile and VmHWM of this process in bytes, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile", "VmHWM")}


def _bytes(t) -> int:
    """Bytes a tensor holds: the plain tensors inside a tensor subclass (torchao's), else its own."""
    import torch

    if type(t) in (torch.Tensor, torch.nn.Parameter):
        return t.numel() * t.element_size()
    names, _ = t.__tensor_flatten__()
    return sum(_bytes(getattr(t, n)) for n in names)


def child(args: argparse.Namespace) -> None:
    import ctypes
    import gc
    import statistics
    import time

    import torch

    import llada
    from llada.runtime import _torchao, quantization_targets

    torch.set_num_threads(args.threads)
    if args.scheme != "none":
        _torchao()  # imported before the baseline, like everything else
    gc.collect()
    base = _memory()
    model = llada.load(args.dir, tokenizer=False, quantization=None if args.scheme == "none" else args.scheme).model
    targets = set(quantization_targets(model))
    linear = sum(_bytes(p) for n, p in model.named_parameters() if n.rpartition(".")[0] in targets)
    total = sum(_bytes(p) for p in model.parameters()) + sum(_bytes(b) for b in model.buffers())
    ids = torch.randint(0, model.config.vocab_size, (1, 256), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        for _ in range(5):
            start = time.perf_counter()
            logits = model(ids)
            times.append(time.perf_counter() - start)
    del logits
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, as a long-running process would
    now = _memory()
    with torch.no_grad():
        logits = model(ids)
    reference = Path(args.dir) / "logits_fp32.pt"
    if args.scheme == "none":
        torch.save(logits, reference)
        rel = 0.0
    else:
        want = torch.load(reference)
        rel = ((logits - want).norm() / want.norm()).item()
    print(json.dumps(dict(total=total, linear=linear, forward_ms=1000 * statistics.median(times), rel=rel,
                          **{k: now[k] - base[k] for k in now})))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="100m")
    parser.add_argument("--schemes", default="none,int8,int4", help="comma list of none, int8, int4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--scheme", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch

    import llada
    from llada.config import preset
    from llada.model import LLaDAModel

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = LLaDAModel(preset(args.preset))
        llada.save(tmp, model)
        print(f"preset {args.preset}: {model.num_params() / 1e6:.1f}M parameters "
              f"({model.config.num_params(embeddings=False) / 1e6:.1f}M in the blocks), saved as float32")
        del model
        print(f"{'scheme':>6}  {'weights':>8}  {'block Linears':>13}  {'rest':>7}  {'anon':>8}  {'file':>8}  "
              f"{'peak':>8}  {'forward':>8}  {'logits L2':>9}")
        schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
        for scheme in (["none"] if "none" not in schemes else []) + schemes:  # fp32 first: the reference
            out = subprocess.run([sys.executable, __file__, "--child", "--dir", tmp, "--scheme", scheme,
                                  "--threads", str(args.threads)], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{scheme:>6}  failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else '?'}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if scheme not in schemes:
                continue
            mib = {k: f"{r[k] / MiB:.0f} MiB" for k in ("total", "linear", "RssAnon", "RssFile", "VmHWM")}
            print(f"{scheme:>6}  {mib['total']:>8}  {mib['linear']:>13}  {(r['total'] - r['linear']) / MiB:>3.0f} MiB  "
                  f"{mib['RssAnon']:>8}  {mib['RssFile']:>8}  {mib['VmHWM']:>8}  {r['forward_ms']:>5.0f} ms  "
                  f"{r['rel']:>9.4f}")


if __name__ == "__main__":
    main()

"""Peak memory of the Eq. 6 likelihood estimate as the prompt grows, response fixed (prints a table).

    python bench/likelihood_memory.py                       # CPU: peak RSS of a fresh process per row
    python bench/likelihood_memory.py --device cuda --preset llada-8b --dtype bfloat16 --lengths 1024,2048,4096

Each row scores one (prompt, response) pair with `log_likelihoods` in a fresh process and reports
the peak memory above the process after loading the model (RSS on CPU, torch's peak allocation
on CUDA). "masked rows" is the library (only the masked positions reach the output head and the
float32 log-softmax); "full (b, T, V)" is the same estimate computed the way the library did
before: the head over every position, the whole logits upcast and log-softmaxed. With the
response fixed, the first stays flat as the prompt grows and the second grows with T * V.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def _full_scoring(model, pairs, mc_num, batch_size, generator):
    """The previous computation: log-softmax of the whole (b, T, V) logits in float32."""
    import torch

    from llada import likelihood

    real = model.forward

    def everything(ids, am=None, output_positions=None):
        logits = likelihood._up(real(ids, am))  # (b, T, V) in float32
        logp = torch.log_softmax(logits, dim=-1)  # (b, T, V): the allocation the library avoids
        return logp if output_positions is None else logp[output_positions]

    model.forward = everything
    try:
        return likelihood.log_likelihoods(model, pairs, mc_num=mc_num, batch_size=batch_size, generator=generator)
    finally:
        model.forward = real


def child(args: argparse.Namespace) -> None:
    import torch

    from llada.config import preset
    from llada.likelihood import log_likelihoods
    from llada.model import LLaDAModel

    torch.manual_seed(0)
    with torch.device(args.device):  # built where it runs: an 8B shape is not initialised on the CPU
        model = LLaDAModel(preset(args.preset, max_sequence_length=max(args.lengths_list) + args.response_len + 8))
    model = model.to(dtype=getattr(torch, args.dtype)).eval()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 1000, (args.length,), generator=g).tolist()
    response = torch.randint(0, 1000, (args.response_len,), generator=g).tolist()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.no_grad():
        run = _full_scoring if args.mode == "full" else (
            lambda m, p, mc_num, batch_size, generator: log_likelihoods(m, p, mc_num=mc_num, batch_size=batch_size,
                                                                        generator=generator))
        est = run(model, [(prompt, response)], mc_num=args.mc_num, batch_size=args.mc_batch, generator=g)[0]
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_mib": (peak - base) / 2**20, "value": est.value}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--lengths", default="128,256,512")
    p.add_argument("--response-len", type=int, default=16)
    p.add_argument("--mc-num", type=int, default=8)
    p.add_argument("--mc-batch", type=int, default=8)
    p.add_argument("--child", choices=["masked", "full"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.lengths_list = [int(x) for x in args.lengths.split(",")]
    if args.child:
        args.mode = args.child
        child(args)
        return
    print(f"preset {args.preset}, {args.dtype} on {args.device}; response {args.response_len} tokens, "
          f"mc_num {args.mc_num}, batch {args.mc_batch}")
    print(f"{'prompt':>7} {'masked rows (MiB)':>18} {'full (b, T, V) (MiB)':>21} {'same estimate':>14}")
    for length in args.lengths_list:
        rows = {}
        for mode in ("masked", "full"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--length", str(length),
                                  *sys.argv[1:]], capture_output=True, text=True, check=True)
            rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        same = abs(rows["masked"]["value"] - rows["full"]["value"]) < 1e-3 * max(1.0, abs(rows["full"]["value"]))
        print(f"{length:>7} {rows['masked']['peak_mib']:>18.0f} {rows['full']['peak_mib']:>21.0f} {str(same):>14}")


if __name__ == "__main__":
    main()

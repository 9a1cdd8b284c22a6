"""How fast the diffusion objective and the AR baseline learn to copy (prints a table).

    python bench/copy_task.py                       # tiny preset, CPU, a few minutes
    python bench/copy_task.py --preset small --steps 3000 --device cuda

Each sequence is n random tokens, a separator, and the same n tokens again. Every `--every` steps
both models are asked for the second copy given the first: the diffusion model sees the first copy
and n masks and fills them all in one forward pass; the AR model predicts each token of the second
copy from everything before it (teacher forcing). Copy accuracy is the fraction of those tokens
predicted right. Both train on the same batches with the same optimiser; only the objective
(Eq. 3 vs next-token) and the attention mask differ. A mask predictor that can see both sides
still has to learn the copy from noisy, partly masked examples, which takes it longer.
"""

from __future__ import annotations

import argparse
import time

import torch

from llada.config import preset
from llada.diffusion import ar_loss, pretrain_loss
from llada.model import LLaDAModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--length", type=int, default=12, help="tokens to copy")
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    V, n = args.vocab, args.length
    mask, sep = V - 1, V - 5
    ids = dict(vocab_size=V, mask_token_id=mask, eos_token_id=V - 2, pad_token_id=V - 2, bos_token_id=V - 3,
               eot_token_id=V - 4)
    data_gen = torch.Generator().manual_seed(args.seed)

    def batch(size: int) -> torch.Tensor:
        x = torch.randint(0, sep, (size, n), generator=data_gen)
        return torch.cat([x, torch.full((size, 1), sep), x], 1).to(args.device)

    models, opts = {}, {}
    for kind in ("diffusion", "autoregressive"):
        torch.manual_seed(args.seed)
        models[kind] = LLaDAModel(preset(args.preset, causal=kind == "autoregressive", **ids)).to(args.device)
        opts[kind] = torch.optim.AdamW(models[kind].parameters(), lr=args.lr, weight_decay=0.0)
    test = batch(256)

    print(f"preset {args.preset}, copy {n} tokens, batch {args.batch}, lr {args.lr:g}, {args.device}")
    print(f"{'step':>6} {'diffusion acc':>14} {'AR acc':>8} {'diffusion loss':>15} {'AR loss':>8}")
    seconds = dict.fromkeys(models, 0.0)
    for step in range(1, args.steps + 1):
        x = batch(args.batch)
        losses = {}
        for kind, model in models.items():
            started = time.perf_counter()
            out = ar_loss(model, x) if kind == "autoregressive" else pretrain_loss(model, x, mask)
            opts[kind].zero_grad(set_to_none=True)
            out.loss.backward()
            opts[kind].step()
            seconds[kind] += time.perf_counter() - started
            losses[kind] = out.loss.item()
        if step % args.every == 0 or step == args.steps:
            acc = {kind: _copy_accuracy(model, test, n, mask) for kind, model in models.items()}
            print(f"{step:>6} {acc['diffusion']:>14.3f} {acc['autoregressive']:>8.3f} "
                  f"{losses['diffusion']:>15.3f} {losses['autoregressive']:>8.3f}")
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


@torch.no_grad()
def _copy_accuracy(model: LLaDAModel, seqs: torch.Tensor, n: int, mask: int) -> float:
    target = seqs[:, n + 1:]
    if model.config.causal:
        pred = model(seqs)[:, n: -1].argmax(-1)
    else:
        pred = model(torch.cat([seqs[:, : n + 1], torch.full_like(target, mask)], 1))[:, n + 1:].argmax(-1)
    return (pred == target).float().mean().item()


if __name__ == "__main__":
    main()

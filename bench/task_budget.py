"""Steps to 50% and 90% exact match on a built-in reasoning task, diffusion vs the AR baseline.

    python bench/task_budget.py --task addition                          # tiny preset, CPU
    python bench/task_budget.py --task sudoku --steps 6000 --every 500
    python bench/task_budget.py --task addition --preset small --device cuda --steps 20000

For each objective, `llada sft` trains a fresh model (`--preset`) on `--data task:NAME` (the
task's training split, chat template, Eq. 5 or the next-token loss), saving a checkpoint every
`--every` steps; each checkpoint is then scored on `--n_eval` held-out problems with
`llada.tasks.evaluate`: greedy, one token per step, one block (the diffusion model's low-confidence
remasking), answers checked by the task's verifier. Prints the accuracy at every checkpoint (± its
standard error), then the first step at which each objective reached 50% and 90% (linearly
interpolated between checkpoints; "-" if never). `--chat_template false` trains and asks without
the template: BOS, the prompt, the answer and EOS (llada's leaner format, not the paper's)., and writes everything to OUT/results.json.
Nothing is asserted: the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import llada
from llada.tasks import evaluate, get_task
from llada.tasks.sources import parse_source
from llada.training import trainer
from llada.training.config import TrainConfig


def crossing(curve: list[tuple[int, float]], level: float) -> float | None:
    """The first step at which `curve` ((step, accuracy), by step) reaches `level`, interpolated."""
    prev_step, prev_acc = 0, 0.0
    for step, acc in curve:
        if acc >= level:
            if acc == prev_acc:
                return float(step)
            return prev_step + (level - prev_acc) / (acc - prev_acc) * (step - prev_step)
        prev_step, prev_acc = step, acc
    return None


def answer_tokens(source: str) -> int:
    """The longest reference answer of the task's first 200 held-out problems, in characters (the
    generation length: the tokenizers llada trains write digits one per token)."""
    task, _ = parse_source(source)
    return max(len(it.answer) for it in task.items("test", 200, 0))


def run(objective: str, args: argparse.Namespace, out: Path) -> list[dict]:
    source = f"task:{args.task}" + (f":{args.sizes}" if args.sizes else "")
    cfg = TrainConfig(stage="sft", model=args.preset, data=source, objective=objective, out_dir=str(out / objective),
                      max_steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                      warmup_steps=args.warmup_steps, save_every=args.every, keep_last=args.steps // args.every + 1,
                      eval_every=0, seed=args.seed, progress=False, tensorboard=False,
                      chat_template=args.chat_template, overrides=args.overrides)
    started = time.perf_counter()
    trainer.run(cfg)
    train_s = time.perf_counter() - started
    gen_length = args.gen_length or answer_tokens(source) + 1  # + the EOS that ends it
    task, _ = parse_source(source)
    rows = []
    saved = {int(c.name[5:]): c for c in (out / objective / "checkpoints").glob("step-*")}
    saved.setdefault(args.steps, out / objective / "model")  # the final model
    for step, ckpt in sorted(saved.items()):
        bundle = llada.load(ckpt, device=args.device)
        scores = evaluate(bundle, task, n=args.n_eval, gen_length=gen_length, steps=gen_length,
                          block_length=gen_length, temperature=0.0, seed=args.seed,
                          chat=args.chat_template)
        rows.append({"step": step, "accuracy": scores.accuracy.to_dict(), "positions": scores.positions})
        a = scores.accuracy
        print(f"{objective:<10} step {step:>6}  accuracy {a.value:.3f} ± {a.stderr:.3f}  "
              f"positions {' '.join(f'{p:.2f}' for p in scores.positions)}", flush=True)
    print(f"{objective:<10} trained {args.steps} steps in {train_s:.0f} s", flush=True)
    return rows


def run_name(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """TASK-PRESET-FORMAT-seedN, then every training setting that differs from its default (so that
    runs with another lr or model option never share a directory)."""
    name = f"{args.task}-{args.preset}-{'chat' if args.chat_template else 'plain'}-seed{args.seed}"
    for key in ("sizes", "steps", "batch_size", "seq_len", "lr", "warmup_steps", "overrides"):
        value = getattr(args, key)
        if value != parser.get_default(key):
            text = json.dumps(value, separators=(",", "=")) if isinstance(value, dict) else str(value)
            name += f"-{key}_{''.join(c for c in text if c.isalnum() or c in '.=_,')}"
    return name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="addition")
    p.add_argument("--sizes", default="", help="task knobs as knob=value,knob=value (e.g. max_digits=3)")
    p.add_argument("--objectives", default="diffusion,ar")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seq_len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup_steps", type=int, default=50)
    p.add_argument("--n_eval", type=int, default=300)
    p.add_argument("--gen_length", type=int, default=0, help="0: the longest answer + 1")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where checkpoints are "
                   "scored (training runs where accelerate puts it)")
    p.add_argument("--chat_template", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                   help="false: train and ask without the chat template (BOS, prompt, answer, EOS)")
    p.add_argument("--overrides", type=json.loads, default={},
                   help='model config fields to override on the preset, as JSON: {"learned_positions": true}')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/task_budget")
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    get_task(args.task)  # an unknown name fails here, before any training
    out = Path(args.out) / run_name(args, p)
    results = {"args": vars(args), "curves": {}}
    for objective in args.objectives.split(","):
        results["curves"][objective] = run(objective, args, out)
    print(f"\n{'objective':<10} {'steps to 50%':>13} {'steps to 90%':>13} {'best':>14}")
    for objective, rows in results["curves"].items():
        curve = [(r["step"], r["accuracy"]["value"]) for r in rows]
        best = max(rows, key=lambda r: r["accuracy"]["value"])
        marks = [crossing(curve, level) for level in (0.5, 0.9)]
        shown = ["-" if m is None else f"{m:.0f}" for m in marks]
        print(f"{objective:<10} {shown[0]:>13} {shown[1]:>13} {best['accuracy']['value']:>8.3f} @ {best['step']}")
        results["curves"][objective] = {"rows": rows, "steps_to_50": marks[0], "steps_to_90": marks[1]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()

"""Peak memory of building a Trainer fresh against resuming one from a checkpoint (prints a table).

    python bench/resume_memory.py                         # preset 100m (~85M parameters, fp32), CPU
    python bench/resume_memory.py --preset small --variants pretrain

Each measurement runs in a fresh Python process, which imports everything first (torch,
accelerate, transformers, datasets, peft), then builds `Trainer(cfg)`, then runs one
`train_step()`, reading the process's peak resident set size (VmHWM) after each phase. The
peak is a high-water mark, so "built" is the most memory held at any moment while the Trainer was
built, and "step" the most held up to the end of its first step (when AdamW's two moments exist
in both cases: the fresh run creates them, the resumed one loads them).

Variants:
    pretrain  from a preset, all weights trained (AdamW moments: 2x the weights)
    lora      SFT of the pretrained model directory with LoRA rank 8 (tiny optimizer state), the
              case of fine-tuning a large checkpoint, where the weights are nearly all the memory

The checkpoints resumed from are made first, by training 2 steps with a checkpoint after step 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WORLD = dict(n_people=8, n_cities=4, n_countries=2, n_stories=0, n_sums=0, sft_sums=0)


def _config(variant: str, preset: str, out_dir: Path, pretrained: Path | None = None):
    from llada.data.world import WorldConfig
    from llada.training.config import TrainConfig

    common = dict(world=WorldConfig(**WORLD), batch_size=2, max_steps=2, save_every=1, keep_last=1,
                  eval_every=0, log_every=1, vocab_size=512, progress=False, tensorboard=False,
                  out_dir=str(out_dir))
    if variant == "pretrain":
        return TrainConfig(model=preset, stage="pretrain", seq_len=64, **common)
    return TrainConfig(model=str(pretrained), stage="sft", seq_len=96, lora_r=8, **common)


def _peak_mb() -> float:
    """This process's peak resident set size in MiB. Linux's VmHWM starts afresh at exec, unlike
    ru_maxrss, which a child inherits from the parent it was forked from."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, a lower bound


def child(variant: str, preset: str, out_dir: Path, pretrained: Path | None) -> None:
    """Build a Trainer in out_dir (resuming when it holds a checkpoint), step once, print peaks."""
    import accelerate  # noqa: F401 - imported up front so that "imports" holds every library
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401

    from llada.training.trainer import Trainer

    imports = _peak_mb()
    trainer = Trainer(_config(variant, preset, out_dir, pretrained))
    built = _peak_mb()
    trainer.train_step()
    step = _peak_mb()
    weights = sum(p.numel() * p.element_size() for p in trainer.base.parameters()) / 2**20
    print(json.dumps({"imports": imports, "built": built, "step": step, "weights": weights,
                      "resumed_at": trainer.step - 1}))


def measure(variant: str, preset: str, out_dir: Path, pretrained: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--preset", preset, "--out", str(out_dir)]
    if pretrained is not None:
        cmd += ["--pretrained", str(pretrained)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="100m")
    ap.add_argument("--variants", default="pretrain,lora")
    ap.add_argument("--repeats", type=int, default=1, help="measurements of each (variant, start)")
    ap.add_argument("--child", choices=["pretrain", "lora"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pretrained", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.preset, args.out, args.pretrained)

    import datasets

    datasets.disable_progress_bars()
    work = Path(tempfile.mkdtemp(prefix="resume-memory-"))
    try:
        table(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(args: argparse.Namespace, work: Path) -> None:
    from llada.training.trainer import Trainer

    pretrained = Trainer(_config("pretrain", args.preset, work / "pt")).fit()  # also pretrain's checkpoint
    print(f"preset {args.preset}; peak RSS in MiB of a fresh process (imports = after importing the libraries)")
    print(f"{'variant':9} {'start':7} {'weights':>8} {'imports':>8} {'built':>8} {'step':>8} "
          f"{'built-imp':>10} {'step-imp':>9}")
    for variant in args.variants.split(","):
        source = pretrained if variant == "lora" else None
        resume_dir = work / "pt"
        if variant == "lora":
            resume_dir = work / "lora"
            Trainer(_config("lora", args.preset, resume_dir, source)).fit()
        for start in ("fresh", "resume"):
            for k in range(args.repeats):
                out = work / f"{variant}-fresh-{k}" if start == "fresh" else resume_dir
                r = measure(variant, args.preset, out, source)
                assert (r["resumed_at"] == 1) == (start == "resume"), r
                print(f"{variant:9} {start:7} {r['weights']:8.0f} {r['imports']:8.0f} {r['built']:8.0f} "
                      f"{r['step']:8.0f} {r['built'] - r['imports']:10.0f} {r['step'] - r['imports']:9.0f}")


if __name__ == "__main__":
    main()

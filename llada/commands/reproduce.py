"""`llada reproduce NAME`: the command's flags, handed to `llada.reproduce.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from llada.reproduce.claims import CLAIMS
from llada.reproduce.models import Models
from llada.reproduce.run import check_given, claim_names, recipe_for, run_claim
from llada.runtime import check_device


def reproduce(name: str, out_dir: str = "runs/reproduce", size: Literal["test", "default", "large"] = "default",
              seed: int = 0, diffusion: str | None = None, ar: str | None = None, device: str | None = None,
              progress: bool = True) -> list[Path]:
    """Reproduce one claim of the paper (or `all`) on the built-in world; write report, plot and results.

    Args:
        name: reversal, remasking, semi-ar, bound, any-order, planning, conversion, or all
        out_dir: OUT_DIR/NAME/ gets report.md, NAME.png and results.json; OUT_DIR/models the models
        size: test (seconds: checks the machinery, measures nothing), default (about 15 minutes on
            2 CPU cores), large (a bigger world and model, for a GPU)
        seed: the world's seed and the training seed
        diffusion: reuse a diffusion model directory that llada sft fine-tuned on the size's world
            (its training_config.json says so; see llada.recipe) instead of training one; checked
            before anything is trained
        ar: reuse an autoregressive model directory of the same kind
        device: cpu, cuda, ... (default: cuda when available)
        progress: show progress bars
    """
    names, recipe = claim_names(name), recipe_for(size)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device, "--device")  # before anything is trained
    given = {k: v for k, v in (("diffusion", diffusion), ("ar", ar)) if v}
    check_given(given, names, seed, size, recipe)
    root = Path(out_dir)
    models = Models(root / "models" / f"{size}-seed{seed}", recipe, seed, device, given, progress)
    setup = {"size": size, "seed": seed, "device": device, "torch": torch.__version__}
    return [run_claim(CLAIMS[n], models, root, setup) for n in names]

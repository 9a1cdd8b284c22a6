"""`llada convert`: re-save a model directory in our layout (dtype, shard size), or turn a causal LM
into a mask predictor on the way (`llada.conversion`), and say which it did."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llada import conversion
from llada.checkpoint.hub import resolve_dir
from llada.checkpoint.layout import CONVERSION_NAME, TRAINING_CONFIG_NAME
from llada.checkpoint.loading import load
from llada.checkpoint.options import LoadOptions
from llada.errors import UserError


def convert(model: str, out: str, dtype: str = "auto", max_shard_size: str = "5GB", revision: str | None = None,
            causal: bool = False, shifted_prediction: bool = True, mask_init: str = "mean", seed: int = 0,
            block_size: int | None = None) -> None:
    """Re-save a model directory in our layout, optionally in another dtype or shard size. A causal
    LM (a transformers LLaMA, Qwen2 or Qwen3 directory, or our autoregressive baseline) is converted
    into a mask predictor in the llada layout: a mask token added, bidirectional attention, its
    head kept and its logits realigned (see llada/conversion.py).

    Args:
        model: source model directory (ours, a public checkpoint of a family, a causal LM, or a Hub id)
        out: destination directory
        dtype: auto (keep), float32, bfloat16 or float16
        max_shard_size: largest safetensors file, e.g. 5GB or 500MB
        revision: a branch, tag or commit when model is a Hub id (default: main)
        causal: converting a causal LM: keep its causal attention (default: bidirectional)
        shifted_prediction: converting a causal LM: keep its head (state i predicts token i + 1)
            and realign the logits, as Dream does
        mask_init: converting a causal LM: the mask token's first embedding row: mean (of the
            vocabulary's rows) or mean_noise (plus Gaussian noise of the model's init_std)
        seed: converting a causal LM: the seed of mean_noise
        block_size: converting a causal LM: sample it as block diffusion with blocks of this many
            tokens (its generation_config.json; default: the default sampler settings)
    """
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file; give a directory (it is created if missing)")
    options = conversion.ConversionOptions(causal=causal, shifted_prediction=shifted_prediction,
                                           mask_init=mask_init, seed=seed, block_size=block_size)
    root = resolve_dir(model, LoadOptions(revision=revision))
    if conversion.source_kind(root) == "causal":
        config = conversion.convert(root, out, options, dtype=dtype, max_shard_size=max_shard_size, name=model)
        attention = "causal" if config.causal else "bidirectional"
        print(f"wrote {out}: a mask predictor ({attention} attention, shifted_prediction={config.shifted_prediction}, "
              f"mask token id {config.mask_token_id})")
        return
    given = [f"--{f.name}" for f in dataclasses.fields(options)
             if getattr(options, f.name) != f.default]
    if given:
        raise UserError(f"{', '.join(given)}: options for converting a causal LM, and {model} is a mask predictor "
                        "already (it is re-saved without them)")
    bundle = load(root, dtype=dtype)
    for name in (TRAINING_CONFIG_NAME, CONVERSION_NAME):  # the card describes the run, or the conversion
        if (bundle.path / name).is_file():
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / name).write_bytes((bundle.path / name).read_bytes())
    bundle.save(out, max_shard_size=max_shard_size)
    print(f"wrote {out}")

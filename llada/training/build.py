"""What a run trains, built once: the model, its tokenizer, and the module the optimizer updates.

    resuming, no LoRA      the checkpoint's model directory: exactly the weights being trained
    a preset (--model)     a fresh model of the preset's shape, its weights drawn from cfg.seed, and a
                           tokenizer: the checkpoint's when resuming, out_dir/tokenizer when an earlier
                           run of these settings trained one, else a BPE trained now on the stage's texts
    a directory or Hub id  that model and its tokenizer; in float32 when all of it is trained (the
                           optimizer's master weights), as stored when only LoRA adapters are

With LoRA a resumed run builds the frozen base from its source, as a fresh run does, and copies the
adapters in from the checkpoint (`restore_adapters`). So a resumed run builds its model once and
needs no more memory than a fresh one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from llada.checkpoint import load
from llada.checkpoint.adapter import load_lora_adapter
from llada.checkpoint.layout import ADAPTER_DIR, read_tensors
from llada.config import ModelConfig, preset
from llada.errors import CheckpointError, UserError
from llada.families import family_for
from llada.model import LLaDAModel
from llada.runtime import base_model, prepare_model
from llada.tokenizer import config_ids, train_tokenizer
from llada.training.checkpoints import Checkpoints
from llada.training.config import TrainConfig
from llada.training.integrity import entries_problem
from llada.training.objectives import Objective

TRAINED_BYTES_PER_PARAM = 16
"""float32 weight, gradient, and AdamW's two moments."""
TOKENIZER_RECIPE = "llada_tokenizer.json"
"""Written last into out_dir/tokenizer: the settings its BPE was trained with (see `_earlier_tokenizer`)."""


def build_model(objective: Objective, resume_dir: Path | None, checkpoints: Checkpoints) -> tuple[LLaDAModel, Any]:
    """The model to train and its tokenizer, for `objective.cfg`, resuming from `resume_dir` when given.

    Resuming without LoRA, the checkpoint's model directory holds exactly the weights being
    trained, so the model is built from it and from nothing else. With LoRA it holds merged
    weights, which cannot give the frozen base back: that is built from its source as a fresh run
    builds it (the adapters come later, `prepare_module`). Raises UserError when the objective
    trains another kind of model (`ModelConfig.kind`) than the one loaded."""
    cfg = objective.cfg
    if resume_dir is not None and not cfg.lora_r:
        model, tokenizer = load_dir(resume_dir, cfg)
    elif cfg.from_scratch:
        tokenizer = _scratch_tokenizer(objective, resume_dir, checkpoints)
        model = _fresh_model(cfg, objective, tokenizer)
    else:
        model, tokenizer = load_dir(cfg.model, cfg, cfg.revision)
    if objective.causal != (model.config.kind == "autoregressive"):  # a shifted causal model is a mask predictor
        raise UserError(f"--objective {cfg.objective} does not match {cfg.model} (a {model.config.kind} model: "
                        f"causal={model.config.causal}, shifted_prediction={model.config.shifted_prediction})")
    return model, tokenizer


def load_dir(path: str | Path, cfg: TrainConfig, revision: str | None = None) -> tuple[LLaDAModel, Any]:
    """The model of a directory or Hub id and its tokenizer, to train: in float32 when all of it is
    trained (the optimizer's master weights; bf16/fp16 is accelerate's autocast, --mixed_precision),
    as stored when only LoRA adapters are (the frozen base keeps its dtype and memory)."""
    bundle = load(path, dtype=None if cfg.lora_r else "float32", revision=revision)  # streamed once
    return bundle.model, bundle.tokenizer


def prepare_module(model: LLaDAModel, cfg: TrainConfig, resume_dir: Path | None) -> torch.nn.Module:
    """`model` as it is trained (runtime.prepare_model: LoRA adapters, activation checkpointing). LoRA's
    initial adapters are drawn from cfg.seed, not the process's history; a resumed LoRA run copies
    the checkpoint's adapters in, before accelerate's prepare, so that under FSDP they are sharded
    like every other weight."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        module = prepare_model(model, lora_r=cfg.lora_r, activation_checkpointing=cfg.activation_checkpointing)
    if resume_dir is not None and cfg.lora_r:
        restore_adapters(module, resume_dir, base=cfg.model)
    return module


def restore_adapters(module: torch.nn.Module, ckpt: Path, base: str = "the base model") -> None:
    """Copy the LoRA adapters of checkpoint `ckpt` (its adapter/ directory) into `module`, the
    peft-wrapped model a resumed run built on the frozen base.

    The frozen weights are not copied: the model was built with them. LoRA leaves the embedding,
    the norms and the output head as they were, so the checkpoint's model directory (merged
    weights) holds them unchanged: the first and last of them are checked against it, so that a base
    model changed since the checkpoint was made is refused (CheckpointError) rather than silently
    combined with adapters trained on another.
    """
    model = base_model(module)
    key = family_for(model.config).checkpoint_key
    untouched = [(n, p) for n, p in model.named_parameters()
                 if not p.requires_grad and "lora_" not in n and ".base_layer." not in n]
    check = untouched[:1] + untouched[-1:]
    stored = read_tensors(ckpt, [key(n) for n, _ in check])
    for name, p in check:
        if not torch.equal(p.detach().cpu(), stored[key(name)]):
            raise CheckpointError(f"cannot resume from {ckpt}: {base} has changed since the checkpoint was made "
                                  f"({name} differs). Restore it, or start afresh in another --out_dir")
    load_lora_adapter(module, ckpt / ADAPTER_DIR)


def _fresh_model(cfg: TrainConfig, objective: Objective, tokenizer: Any) -> LLaDAModel:
    """A preset's shape with the tokenizer's ids, its weights drawn from cfg.seed, once
    `check_memory` finds room for it."""
    overrides = {**config_ids(tokenizer), "max_sequence_length": max(cfg.seq_len, 256),
                 "causal": objective.causal, **cfg.overrides}
    model_config = preset(cfg.model, **overrides)
    check_memory(model_config, cfg)
    torch.manual_seed(cfg.seed)
    return LLaDAModel(model_config)


def check_memory(config: ModelConfig, cfg: TrainConfig) -> None:
    """Refuse, in one line, a fresh model whose float32 weights, gradients and AdamW moments
    (TRAINED_BYTES_PER_PARAM bytes a parameter, before any activation) exceed the memory this
    machine has available now (psutil), or the free memory of the GPU it trains on: building it
    would only run the machine out of memory."""
    import psutil  # accelerate's dependency, so the train extra's

    need = config.num_params() * TRAINED_BYTES_PER_PARAM
    if torch.cuda.is_available():
        have, where = torch.cuda.mem_get_info()[0], "free on the GPU"
    else:
        have, where = psutil.virtual_memory().available, "available"
    if need > have:
        raise UserError(f"--model {cfg.model} with these overrides has {config.num_params():.3g} parameters: training "
                        f"them needs about {need / 1e9:.3g} GB of memory for weights, gradients and AdamW's moments "
                        f"alone, and this machine has {have / 1e9:.3g} GB {where}; choose a smaller preset or "
                        "--overrides, or a larger machine")


def _scratch_tokenizer(objective: Objective, resume_dir: Path | None, checkpoints: Checkpoints) -> Any:
    """The checkpoint's tokenizer when resuming, out_dir/tokenizer when an earlier run of these
    settings trained one, else a BPE trained now on the stage's texts (and saved there, whole)."""
    if resume_dir is not None:
        return AutoTokenizer.from_pretrained(resume_dir)
    cfg = objective.cfg
    tok_dir = checkpoints.out / "tokenizer"
    earlier = _earlier_tokenizer(tok_dir, cfg, checkpoints)
    if earlier is not None:
        return earlier
    tokenizer = train_tokenizer(objective.data.tokenizer_texts(), vocab_size=cfg.vocab_size)

    def write(tmp: Path) -> None:
        if checkpoints.acc.is_main_process:
            tokenizer.save_pretrained(tmp)
            (tmp / TOKENIZER_RECIPE).write_text(json.dumps(_tokenizer_recipe(cfg), indent=2) + "\n")

    checkpoints.publish(tok_dir, f"the tokenizer to {tok_dir}", write)
    return tokenizer


def _tokenizer_recipe(cfg: TrainConfig) -> dict[str, Any]:
    """What a scratch tokenizer depends on: the vocabulary size and the texts it is trained on."""
    now = dataclasses.asdict(cfg)
    return {k: now[k] for k in ("vocab_size", "stage", "data", "world", "seed")}


def _earlier_tokenizer(tok_dir: Path, cfg: TrainConfig, checkpoints: Checkpoints) -> Any | None:
    """out_dir/tokenizer if an earlier run trained it with these settings, else None, saying why.

    It is only there when no checkpoint is (a resume reads the checkpoint's own tokenizer), so
    nothing was trained with it: one that is damaged, half written (no recipe file, which goes in
    last) or trained for other settings (--vocab_size, --data) is replaced by a new one."""
    if not tok_dir.exists():
        return None
    try:
        problem = entries_problem(tok_dir)  # a FIFO would block its reader; a symlink may lead out
        if problem is not None:
            raise CheckpointError(problem)
        saved = json.loads((tok_dir / TOKENIZER_RECIPE).read_text())
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        config_ids(tokenizer)  # it has the mask and EOS tokens
    except Exception as e:  # noqa: BLE001 - a damaged directory fails in many ways
        why = f"it has no {TOKENIZER_RECIPE}, which is written last" if isinstance(e, FileNotFoundError) \
            else f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        checkpoints.note(f"{tok_dir} is damaged or unfinished ({why}); training a new tokenizer in its place")
        return None
    recipe = json.loads(json.dumps(_tokenizer_recipe(cfg)))
    changed = [f"--{k} {saved.get(k)!r}, now {v!r}" for k, v in recipe.items() if saved.get(k) != v]
    if changed:
        checkpoints.note(f"{tok_dir} was trained for other settings ({'; '.join(changed)}); no checkpoint uses it, "
                         "so a new tokenizer is trained in its place")
        return None
    return tokenizer

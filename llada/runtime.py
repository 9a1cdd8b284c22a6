"""Runtime techniques applied to a finished model, in one place: LoRA, activation checkpointing,
torch.compile. Distributed wrapping (DDP, FSDP) is accelerate's, chosen by its config
file (configs/accelerate/*.yaml) and applied by `accelerator.prepare` in the trainer.

Order matters: LoRA first (it replaces Linear modules), then activation checkpointing (a flag the
model's forward reads per block), then compile (it traces what the other two built).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from llada.model import LLaDAModel

logger = logging.getLogger(__name__)

# Every Linear of a block: attention q/k/v/out and the SwiGLU gate/up/down projections. In a
# mixture-of-experts block the router and the experts stay frozen and unadapted (adapting hundreds
# of experts, each seeing a few tokens, is what LoRA for MoE models avoids): attention only.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]


def apply_lora(model: LLaDAModel, r: int, alpha: int | None = None, dropout: float = 0.0) -> nn.Module:
    """Freeze the model and add rank-`r` LoRA adapters to every block Linear (through peft).

    The output head `transformer.ff_out` is left frozen and unadapted (the block-level `ff_out`
    matches by name; the head is excluded explicitly).
    """
    from peft import LoraConfig, get_peft_model

    if r <= 0:
        raise ValueError(f"LoRA rank must be positive, got {r}")
    targets = [name for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and ".blocks." in name and ".moe." not in name
               and name.rsplit(".", 1)[-1] in LORA_TARGETS]
    config = LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout, target_modules=targets, bias="none")
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    logger.info("LoRA r=%d: %s trainable parameters of %s", r, f"{trainable:,}", f"{model.num_params():,}")
    return peft_model


def merge_lora(model: nn.Module) -> LLaDAModel:
    """The plain model with the adapters folded into the weights (a no-op without LoRA)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def base_model(model: nn.Module) -> LLaDAModel:
    """The LLaDAModel inside whatever wrappers (compile, peft, DDP) surround it."""
    seen = model
    for _ in range(8):
        if isinstance(seen, LLaDAModel):
            return seen
        seen = getattr(seen, "_orig_mod", None) or getattr(seen, "module", None) or getattr(seen, "base_model", None) \
            or getattr(seen, "model", None)
        if seen is None:
            break
    raise TypeError(f"no LLaDAModel inside {type(model).__name__}")


def prepare_model(model: LLaDAModel, *, lora_r: int = 0, activation_checkpointing: bool = False,
                  compile: bool = False) -> nn.Module:
    """Apply the runtime techniques in their one valid order; returns the module to train."""
    out: nn.Module = model
    if lora_r:
        out = apply_lora(model, lora_r)
    model.activation_checkpointing = activation_checkpointing
    if compile:
        # dynamic=False: training batches have a fixed shape (variable-length crops recompile once
        # per new length, which is rare at LLaDA's 1%).
        out = torch.compile(out)
    return out

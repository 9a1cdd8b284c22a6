"""The LoRA adapter of a LoRA run, as peft lays one out, for the base model opened in transformers
(`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dir)`, after `import llada`):
that model holds the LLaDAModel as `.model` (llada.hf), so the keys gain its `model.` as the
weights of a model directory do."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from llada.checkpoint.layout import ADAPTER_WEIGHTS, KEY_PREFIX, open_safetensors
from llada.checkpoint.saving import save_safetensors
from llada.errors import CheckpointError, ModelDirError

_PEFT_PREFIX = "base_model.model."


def save_lora_adapter(module: nn.Module, path: str | Path, base: str,
                      state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the LoRA adapters of `module` (a peft-wrapped LLaDAModel, compiled or not) into `path`:
    adapter_config.json (naming `base`, the model it adapts) and adapter_model.safetensors.
    `state`: the module's whole state dict when its own parameters are not (FSDP shards: the one
    accelerate's `get_state_dict` gathered); default `module.state_dict()`."""
    from peft import get_peft_model_state_dict

    peft_model = getattr(module, "_orig_mod", module)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(peft_model, state_dict=state)
    state = {_PEFT_PREFIX + KEY_PREFIX + k.removeprefix(_PEFT_PREFIX): v.detach().cpu().contiguous()
             for k, v in state.items()}
    save_safetensors(state, out / ADAPTER_WEIGHTS)
    config = copy.copy(peft_model.peft_config["default"])
    local = Path(base).expanduser()
    config.base_model_name_or_path = str(local.resolve()) if local.is_dir() else base
    config.inference_mode = True
    config.save_pretrained(str(out))


def load_lora_adapter(module: nn.Module, path: str | Path) -> None:
    """Copy the adapters of a directory written by `save_lora_adapter` into `module`, a peft-wrapped
    LLaDAModel with the same LoRA settings (a resumed run); every adapter weight must be there."""
    from peft import set_peft_model_state_dict

    peft_model = getattr(module, "_orig_mod", module)
    file = Path(path) / ADAPTER_WEIGHTS
    if not file.is_file():
        raise ModelDirError(f"{file}: no such file (a checkpoint of a LoRA run keeps its adapters there)")
    with open_safetensors(file) as f:
        state = {_PEFT_PREFIX + k.removeprefix(_PEFT_PREFIX + KEY_PREFIX): f.get_tensor(k) for k in f.keys()}
    result = set_peft_model_state_dict(peft_model, state)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    missing = sorted(trainable & set(result.missing_keys))
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise CheckpointError(f"{file}: its adapters do not fit this model ({len(missing)} missing, "
                              f"{len(result.unexpected_keys)} unexpected, e.g. {first!r}); it was not written "
                              "with this run's settings")

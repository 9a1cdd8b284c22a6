"""Writing a model directory: config.json, safetensors (sharded past a size), the tokenizer,
generation_config.json and the model card, in the layout of the model's family, every file
flushed to disk before `save` returns."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from llada.checkpoint.card import write_model_card
from llada.checkpoint.hub import check_repo_id, push
from llada.checkpoint.layout import CONFIG_NAME, GENERATION_CONFIG_NAME, INDEX_NAME, generation_config
from llada.checkpoint.options import resolve_dtype
from llada.checkpoint.tokenizer import check_tokenizer, drop_unshipped_tokenizer_code
from llada.config import ModelConfig, brief_repr
from llada.errors import CheckpointError, ModelDirError
from llada.families import family_for
from llada.model import LLaDAModel
from llada.runtime import is_quantized
from llada.sampling.options import SamplerOptions
from llada.tokenizer import save_tokenizer


def state_dict_for_saving(model: LLaDAModel, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Checkpoint keys -> contiguous CPU tensors, in the key names of the model's family (LLaDA:
    the `model.` prefix of the public checkpoints). A quantized model, or one with weights offloaded
    by a device_map, is refused (CheckpointError): load it plainly to save it."""
    if is_quantized(model) or any(p.is_meta for p in model.parameters()):
        raise CheckpointError("this model is quantized or has offloaded weights and cannot be saved as it is; "
                              "load it without quantization or device_map to save it")
    out = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[name] = t.to("cpu").contiguous()
    return {k: t.contiguous() for k, t in family_for(model.config).to_checkpoint(out).items()}


def save(path: str | Path, model: LLaDAModel, tokenizer: Any = None, *, max_shard_size: int | str = "5GB",
         dtype: str | torch.dtype | None = None, options: SamplerOptions | None = None,
         push_to_hub: str | None = None) -> None:
    """Write a model directory into `path`: config.json, safetensors (sharded past max_shard_size),
    the tokenizer, generation_config.json (`options`, default: SamplerOptions' defaults) and a
    model card, in the layout of the model's family. A LLaDA directory opens here, in
    `transformers.AutoModel` (after `import llada`), and in the reference modeling code with
    `trust_remote_code=True`; a Dream directory here and in Dream's own code. `push_to_hub="user/name"`
    then uploads it (`hub.push`)."""
    want = resolve_dtype(dtype)
    check_save_arguments(path, tokenizer, options, max_shard_size)  # before the weights are gathered
    if push_to_hub:
        check_repo_id(push_to_hub)  # before anything is written
    save_state_dict(path, state_dict_for_saving(model, want), model.config, tokenizer,
                    max_shard_size=max_shard_size, options=options)
    if push_to_hub:
        push(str(path), push_to_hub)


def save_state_dict(path: str | Path, state: dict[str, torch.Tensor], config: ModelConfig, tokenizer: Any = None,
                    *, max_shard_size: int | str = "5GB", options: SamplerOptions | None = None) -> None:
    """`save` for a state dict already in checkpoint keys (e.g. gathered from FSDP ranks). Files the
    caller wrote into `path` first (training_config.json, adapter/) are described in the model card.
    Every argument is checked before anything is written (`check_save_arguments`)."""
    shard_bytes = check_save_arguments(path, tokenizer, options, max_shard_size)
    if tokenizer is not None:
        check_tokenizer(tokenizer, config, source="tokenizer")
    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way (NotADirectoryError), no permission, ...
        raise ModelDirError(f"{root}: the model directory cannot be created ({e.strerror or e})") from None
    _write_weights(root, state, shard_bytes)
    fam = family_for(config)
    cfg = fam.config_to_json(config)
    cfg["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    cfg["auto_map"] = dict(fam.auto_map)
    # LLaDA's reference code would drop a learned position embedding, not realign shifted logits, size
    # its heads d_model / n_heads and not scale RoPE: a directory that needs any of these names no remote
    # code (Dream's config.json implies the shift, unwritten; the other layouts refuse the rest)
    if config.learned_positions or cfg.get("shifted_prediction") or config.custom_head_dim or config.rope_scaling:
        del cfg["auto_map"]
    (root / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if options is None:  # the family's recommended decoding, else the defaults
        preset = fam.sampler_preset
        options = SamplerOptions.from_dict({"preset": preset}) if preset else SamplerOptions()
    gen = generation_config(options, config)
    (root / GENERATION_CONFIG_NAME).write_text(json.dumps(gen, indent=2) + "\n")
    if tokenizer is not None:
        save_tokenizer(tokenizer, root, model_max_length=config.max_sequence_length)
        drop_unshipped_tokenizer_code(root)
    write_model_card(root)
    fsync_tree(root)


def check_save_arguments(path: Any, tokenizer: Any, options: Any, max_shard_size: Any) -> int:
    """The arguments of `save` / `save_state_dict` a mistake can make unusable, each refused in one
    UserError naming it: `path` a file, `tokenizer` not a tokenizer, `options` not SamplerOptions,
    `max_shard_size` not a size. Returns max_shard_size in bytes (`shard_bytes`)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ModelDirError(f"path must be a directory path, got {brief_repr(path)}")
    if Path(path).exists() and not Path(path).is_dir():
        raise ModelDirError(f"{path} is a file; save writes a model directory: give the path of a directory "
                            "(new, or one to overwrite)")
    if tokenizer is not None and not all(hasattr(tokenizer, a) for a in ("get_vocab", "save_pretrained")):
        raise CheckpointError(f"tokenizer must be a transformers tokenizer (llada.load(...).tokenizer, "
                              f"AutoTokenizer.from_pretrained(...)) or None, got {type(tokenizer).__name__}")
    if options is not None and not isinstance(options, SamplerOptions):
        raise CheckpointError(f"options must be a SamplerOptions or None, got {type(options).__name__} "
                              "(SamplerOptions.from_dict(...) reads a dict)")
    return shard_bytes(max_shard_size)


# A shard size as huggingface_hub reads one: a number and a unit of powers of 1000, any case.
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]B)\s*", re.IGNORECASE)
_SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def shard_bytes(size: Any) -> int:
    """`max_shard_size` in bytes: a positive int of bytes, or text such as "5GB", "500MB" (KB, MB,
    GB, TB); anything else (0, "abc", a bool) is a CheckpointError saying what sizes look like."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    found = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if found is not None and (n := int(float(found[1]) * _SIZE_UNITS[found[2].upper()])) > 0:
        return n
    raise CheckpointError(f'max_shard_size must be a size such as "5GB", "500MB" or an int of bytes, got '
                          f"{brief_repr(size)}")


def _write_weights(root: Path, state: dict[str, torch.Tensor], max_shard_size: int) -> None:
    """`state` as safetensors shards of at most `max_shard_size` bytes (and their index when several),
    the shards of an earlier save that this one does not overwrite removed."""
    from huggingface_hub import split_torch_state_dict_into_shards

    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size,
                                               filename_pattern="model{suffix}.safetensors")
    for stale in list(root.glob("model*.safetensors")) + [root / INDEX_NAME]:
        if stale.exists() and stale.name not in split.filename_to_tensors:
            stale.unlink()
    for file_name, keys in split.filename_to_tensors.items():
        save_safetensors({k: state[k].contiguous() for k in keys}, root / file_name)
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": split.tensor_to_filename}
        (root / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write `tensors` as the safetensors file `path`, its mode set by the user's umask like every
    other file of the directory (safetensors itself creates its files readable by the owner only)."""
    save_file(tensors, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read without changing it where the system shows it (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore, the one portable way to read it
    os.umask(mask)
    return mask


def fsync_tree(root: Path) -> None:
    """Flush every file and directory entry below `root`, so a crash right after leaves whole files."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

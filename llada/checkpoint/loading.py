"""Opening a model directory: `load` (model, tokenizer and recommended sampler settings) and
`load_model`, with the options of `LoadOptions`.

The model is built on the meta device and every tensor is streamed from the shards into it, one
at a time, renamed by the model's family and checked against the shape its config implies, so an
8B checkpoint needs its own size in memory, not twice. With a device map each tensor goes straight
to its place (`llada.placement`); quantization and compilation apply to the finished model
(`llada.runtime`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llada import runtime
from llada.checkpoint.hub import resolve_dir
from llada.checkpoint.layout import (
    CONFIG_NAME,
    load_sampler_options,
    open_safetensors,
    read_config,
    stored_dtype,
    weight_files,
)
from llada.checkpoint.options import LoadOptions
from llada.checkpoint.saving import save
from llada.checkpoint.tokenizer import fill_special_ids, load_tokenizer
from llada.config import ModelConfig
from llada.errors import CheckpointError, ModelDirError
from llada.families import family_for
from llada.model import LLaDAModel
from llada.placement import Placer, resolve_device_map
from llada.sampling.options import SamplerOptions


@dataclass
class Bundle:
    """What `load` returns: the model, its tokenizer, and the config they agree on."""

    model: LLaDAModel
    tokenizer: Any  # transformers.PreTrainedTokenizerFast, or None when loaded without one
    config: ModelConfig
    path: Path | None = None
    options: SamplerOptions = field(default_factory=SamplerOptions)
    """The recommended sampler settings, from generation_config.json (the defaults when it has none)."""

    def save(self, path: str | Path, **kwargs: Any) -> None:
        kwargs.setdefault("options", self.options)
        save(path, self.model, self.tokenizer, **kwargs)


def load(path: str | Path, options: LoadOptions | None = None, **changes: Any) -> Bundle:
    """Open a model directory (ours or a public LLaDA checkpoint, sharded or not, or a Hub id).

    options: how (`LoadOptions`; default: as stored, on the CPU, with the tokenizer); `changes`
        are options by name over them: `load(path, dtype="bfloat16", device="cuda")`. Every option
        is checked before anything is read or downloaded.
    Errors are ModelDirError / CheckpointError with one line saying what was wrong.
    """
    opts = (options or LoadOptions()).replace(**changes)
    root = resolve_dir(path, opts)
    model = _load_model(root, opts)
    tok = load_tokenizer(root, model.config) if opts.tokenizer else None
    if tok is not None:
        fill_special_ids(model.config, tok)
    return Bundle(model=model, tokenizer=tok, config=model.config, path=root, options=load_sampler_options(root))


def load_model(path: str | Path, options: LoadOptions | None = None, **changes: Any) -> LLaDAModel:
    """The model of a model directory (or Hub id), in eval mode, streamed shard by shard onto the
    options' device, or placed by their device map, then quantized or compiled as they say.
    Raises ModelDirError / CheckpointError for a directory that does not load."""
    opts = (options or LoadOptions()).replace(**changes)
    return _load_model(resolve_dir(path, opts), opts)


def _load_model(root: Path, opts: LoadOptions) -> LLaDAModel:
    """`load_model` for a local model directory `root`."""
    if not (root / CONFIG_NAME).exists():
        raise ModelDirError(f"{root}: no {CONFIG_NAME}; is this a model directory?")
    config = read_config(root)
    with torch.device("meta"):
        model = family_for(config).build(config)
    files = weight_files(root)
    stored = stored_dtype(root, files)  # refuses float8 weights before anything is allocated
    dtype = opts.torch_dtype or stored
    keep_float32 = opts.torch_dtype is None  # float32 buffers stay so, unless a dtype is asked for (`_as_loaded`)
    device = torch.device(opts.device or "cpu")
    placer = None
    if opts.device_map is not None:
        device_map = resolve_device_map(model, opts.device_map, opts.max_memory, dtype, opts.offload_folder)
        placer = Placer(model, device_map, opts.offload_folder)
    # quantized layers are moved to `device` one at a time, from the CPU, by runtime.quantize
    stream_to = torch.device("cpu") if opts.quantization is not None or placer is not None else device
    _stream_weights(model, root, files, stream_to, dtype, placer, keep_float32)
    model.eval()
    if placer is not None:
        return placer.dispatch(model)
    if opts.quantization is not None:
        runtime.quantize(model, opts.quantization, device)
    return runtime.compile_blocks(model) if opts.compile else model


def _stream_weights(model: LLaDAModel, root: Path, files: dict[str, list[str]], device: torch.device,
                    dtype: torch.dtype, placer: Placer | None = None, keep_float32: bool = False) -> None:
    """Every tensor of the safetensors files into `model` (on the meta device), renamed by the
    model's family, checked against the shapes the config implies, in floating dtype `dtype`
    (`_as_loaded`; `keep_float32`: float32 buffers stay so); with a `placement.Placer`, each to
    where the device map puts it."""
    config, fam = model.config, family_for(model.config)
    expected = dict(model.named_parameters())
    buffers = {n for n, _ in model.named_buffers()
               if n.rpartition(".")[2] not in model.get_submodule(n.rpartition(".")[0])._non_persistent_buffers_set}
    expected.update((n, model.get_buffer(n)) for n in buffers)
    seen: set[str] = set()
    for file_name, keys in files.items():
        file_path = root / file_name
        # safetensors names the CPU "cpu" only (accelerate's multi-process CPU device is "cpu:0")
        with open_safetensors(file_path, device="cpu" if device.type == "cpu" else str(device)) as f:
            for key in keys:
                pieces = fam.from_checkpoint(key, f.get_tensor(key), config)
                if pieces is None or any(name not in expected for name in pieces):
                    raise CheckpointError(f"{file_path}: unexpected weight {key!r} for this config "
                                          f"(weight_tying={config.weight_tying}, "
                                          f"include_bias={config.include_bias})")
                for name, tensor in pieces.items():
                    _check_piece(file_path, key, tensor, expected[name])
                    tensor = _own_storage(_as_loaded(file_path, key, tensor, dtype, keep_float32 and name in buffers))
                    if placer is not None:
                        tensor = placer.place(name, tensor)
                    if tensor is not None:  # None: written to the offload folder, left on the meta device
                        _set_parameter(model, name, tensor)
                    seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        shown = ", ".join(fam.checkpoint_key(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"{root}: {len(missing)} weight(s) missing from the safetensors files: {shown}")


def _as_loaded(file_path: Path, key: str, tensor: torch.Tensor, dtype: torch.dtype,
               keep_float32: bool) -> torch.Tensor:
    """A stored floating tensor in the one dtype the model runs in (the requested one, else the
    dtype most of the weights are stored in: a checkpoint mixing float32 and bfloat16 would load
    and fail at the first matmul). `keep_float32` (a buffer, no dtype asked for): a float32 tensor
    stays float32, as the families store it on purpose (LLaDA 2.x's expert_bias ranks experts by
    small differences; the router reads it in float32 whatever the weights' dtype).
    Refuses NaN or infinite values, stored or from the conversion, naming the tensor: one
    `aminmax` per tensor (NaN propagates into both, an infinity is one of them), no copy."""
    if not tensor.is_floating_point():
        return tensor
    out = tensor if keep_float32 and tensor.dtype == torch.float32 else tensor.to(dtype)
    if out.numel() and not all(torch.isfinite(v) for v in torch.aminmax(out)):
        stored = all(torch.isfinite(v) for v in torch.aminmax(tensor))
        if stored:
            raise CheckpointError(f"{file_path}: {key} overflows {str(dtype).removeprefix('torch.')} (its values "
                                  f"reach {tensor.abs().max().item():.3g}); load it in float32 or bfloat16")
        raise CheckpointError(f"{file_path}: {key} holds NaN or infinite values; the weights are damaged (or "
                              "were saved from a run that diverged): save them again from a sound run")
    return out


def _check_piece(file_path: Path, key: str, tensor: torch.Tensor, slot: torch.Tensor) -> None:
    """Refuse a stored tensor that does not fit the parameter (or buffer) `slot` it fills: another
    shape, or integer values where the model holds floating-point ones (they would load, and the
    first forward would fail)."""
    if tuple(tensor.shape) != tuple(slot.shape):
        raise CheckpointError(f"{file_path}: {key} has shape {tuple(tensor.shape)}, but "
                              f"{CONFIG_NAME} implies {tuple(slot.shape)}")
    if slot.is_floating_point() and not tensor.is_floating_point():
        raise CheckpointError(f"{file_path}: {key} holds {str(tensor.dtype).removeprefix('torch.')} values; "
                              "a model's weights are floating-point (float32, bfloat16 or float16)")


_ALIGNMENT = 64  # bytes: what torch's CPU allocator gives every fresh tensor


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, copied into a fresh allocation when it is a view into a larger buffer (a safetensors
    file's bytes, a fused query_key_value split in three) or not aligned as a fresh tensor is. The
    CPU's matrix kernels may take another path for an unaligned operand, so without this the same
    weights loaded two ways (a public fused layout, a re-saved one, an offloaded copy) could give
    logits that differ in the last float32 bits."""
    if tensor.device.type != "cpu":
        return tensor
    shared = tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()
    if shared or tensor.data_ptr() % _ALIGNMENT or not tensor.is_contiguous():
        return tensor.clone(memory_format=torch.contiguous_format)
    return tensor


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put a loaded tensor in place of the (meta) parameter or buffer `name`."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._buffers:  # e.g. an MoE router's expert bias: set by balancing, not trained
        module._buffers[leaf] = tensor
    else:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=tensor.is_floating_point())

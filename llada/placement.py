"""Placing a model too large for one device over several GPUs, the CPU and disk (`llada.load(path,
device_map=...)`), with accelerate's big-model inference.

A device map names, for each module, where its weights live: a GPU index, "cpu" or "disk". A block
is never split (a block's residual stream and attention stay on one device); "auto" spreads the
blocks evenly over the GPUs of `max_memory` (`balanced_memory`), then fills the CPU and finally
disk. `checkpoint.load_model` streams each tensor straight to
its place (disk tensors into accelerate's offload folder), then `dispatch_model` adds the hooks that
move activations from block to block and bring offloaded weights in for their forward.

The model's forward creates its rotary angles and masks on the input's device; the hooks move them
with the hidden states into each block. The embedding must not be offloaded: the samplers put their
tensors where `model.device` (the embedding's weight) is, their key/value cache included. The model
itself is single-device code; `follow_devices` adds what a spread model needs beyond accelerate's
hooks: each layer's cache moved to the device its block runs on (a block writes its keys and values
into the cache in place, which a copy made by the hooks would lose), and a tied output head's input
moved to the embedding it multiplies by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from llada.errors import CheckpointError
from llada.model import KVCache, LLaDAModel

DeviceMap = dict[str, Any]  # module name -> GPU index, "cuda:N", "cpu" or "disk"
DEVICE_MAPS = ("auto",)  # the names accepted in place of a dict
EMBEDDING = "transformer.wte"


def block_classes(model: nn.Module) -> list[str]:
    """Class names of the model's blocks: the modules accelerate must keep whole on one device."""
    return sorted({type(b).__name__ for b in model.transformer.blocks})


def infer_device_map(model: nn.Module, max_memory: dict[int | str, int | str] | None = None,
                     dtype: torch.dtype | None = None) -> DeviceMap:
    """Where each module of `model` (on the meta device: only shapes are read) goes, for weights of
    `dtype` (default: the model's): blocks balanced over the GPUs in `max_memory` ({0: "80GiB", ...,
    "cpu": "200GiB"}; default: every visible GPU's free memory, then the CPU's), whole blocks only,
    by accelerate's `infer_auto_device_map` under the budgets of `balanced_memory`. What does not
    fit goes to "disk" (accelerate's last resort). Raises CheckpointError for a malformed max_memory."""
    from accelerate import infer_auto_device_map

    no_split = block_classes(model)
    try:
        budget = balanced_memory(model, max_memory, dtype)
        device_map = infer_auto_device_map(model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    except (ValueError, TypeError, KeyError) as e:  # a malformed max_memory: accelerate's own words
        raise CheckpointError(f"max_memory {max_memory!r} cannot be used ({e})") from None
    return device_map


def balanced_memory(model: nn.Module, max_memory: dict[int | str, int | str] | None,
                    dtype: torch.dtype | None) -> dict[int | str, int]:
    """`max_memory` in bytes (accelerate's `get_max_memory`: this machine's when None), with every
    GPU but the last capped at an even share of the model plus its largest block, so that filling
    the GPUs in order spreads the blocks evenly. (accelerate's `get_balanced_memory` sizes that
    slack by the first block it meets; in LLaDA 2.x that is the small dense one, and the last GPU
    ends up with a third of the model.)"""
    from accelerate.utils import compute_module_sizes, get_max_memory

    memory = get_max_memory(dict(max_memory) if max_memory is not None else None)
    gpus = sorted(d for d, m in memory.items() if isinstance(d, int) and m > 0)
    if len(gpus) < 2:
        return memory
    sizes = compute_module_sizes(model, dtype=dtype)
    largest = max(sizes[f"transformer.blocks.{i}"] for i in range(len(model.transformer.blocks)))
    share = sizes[""] // len(gpus) + largest
    return {d: min(m, share) if d in gpus[:-1] else m for d, m in memory.items()}


def resolve_device_map(model: nn.Module, device_map: str | DeviceMap, max_memory: dict | None,
                       dtype: torch.dtype | None, offload_folder: str | Path | None) -> DeviceMap:
    """`device_map` ("auto" or a dict) checked against `model`: every weight placed, no block split,
    the embedding on a device, the GPUs present, and an offload folder when anything goes to disk.
    Each problem is one CheckpointError saying what would be right."""
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAPS:
            raise CheckpointError(f"unknown device_map {device_map!r}; give 'auto' or a dict of module name -> "
                                  "GPU index, 'cpu' or 'disk'")
        device_map = infer_device_map(model, max_memory, dtype)
    elif not isinstance(device_map, dict) or not device_map:
        raise CheckpointError(f"device_map must be 'auto' or a dict of module name -> device, got {device_map!r}")
    elif max_memory is not None:
        raise CheckpointError("max_memory applies to device_map='auto'; a device_map dict already places "
                              "every module")
    check_device_map(model, device_map)
    for name, where in device_map.items():
        _check_device(name, where)
    if "disk" in device_map.values() and offload_folder is None:
        raise CheckpointError("the device_map puts weights on disk; give offload_folder= (a directory for them)")
    return dict(device_map)


def check_device_map(model: nn.Module, device_map: DeviceMap) -> None:
    """A CheckpointError unless `device_map` places every weight of `model`, splits no block, keeps
    the embedding on a device that runs it (whether the devices it names exist is not checked here:
    a plan for another machine passes)."""
    blocks = {f"transformer.blocks.{i}" for i in range(len(model.transformer.blocks))}
    for name in device_map:
        block = next((b for b in blocks if name.startswith(b + ".")), None)
        if block is not None:
            raise CheckpointError(f"device_map entry {name!r} splits {block}; place whole blocks "
                                  f"({block!r}: device)")
    missing = sorted({n.rpartition(".")[0] for n, _ in model.named_parameters()
                      if _placement(device_map, n) is None})
    if missing:
        raise CheckpointError(f"device_map places no device for {', '.join(missing[:3])}"
                              f"{' ...' if len(missing) > 3 else ''}; every module needs one")
    accelerators = {w for w in device_map.values() if w not in ("cpu", "disk")}

    def offloaded(name: str) -> bool:  # weights kept off the device that runs the module
        where = _placement(device_map, name)
        return where == "disk" or (where == "cpu" and bool(accelerators))

    if offloaded(EMBEDDING):
        raise CheckpointError(f"device_map offloads {EMBEDDING} to {_placement(device_map, EMBEDDING)}; it must "
                              "be on a device the model runs on (the samplers put their tensors where it is)")


def _check_device(name: str, where: Any) -> None:
    if where in ("cpu", "disk"):
        return
    text = f"cuda:{where}" if isinstance(where, int) and not isinstance(where, bool) else str(where)
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise CheckpointError(f"device_map[{name!r}] = {where!r} is not a device; use a GPU index, "
                              "'cuda:N', 'cpu' or 'disk'") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise CheckpointError(f"device_map[{name!r}] = {where!r}, but this machine has {count} CUDA "
                                  "device(s); use 'cpu' or 'disk' for what does not fit")


def _placement(device_map: DeviceMap, name: str) -> Any:
    """Where `device_map` puts parameter or module `name`: its longest matching prefix ("" matches all)."""
    parts = name.split(".")
    for i in range(len(parts), -1, -1):
        key = ".".join(parts[:i])
        if key in device_map:
            return device_map[key]
    return None


class Placer:
    """Puts each loaded tensor where the device map says: on its device, or into the offload
    folder when its place is "disk" (the model's parameter then stays on the meta device). Buffers
    (an MoE router's expert bias) are never written to disk: accelerate keeps them on the device
    that runs their module, and takes them from the CPU to get there."""

    def __init__(self, model: nn.Module, device_map: DeviceMap, offload_folder: str | Path | None):
        self.device_map = device_map
        self.buffers = {name for name, _ in model.named_buffers()}
        self.folder = None if offload_folder is None else Path(offload_folder)
        self.index: dict[str, Any] = {}
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def place(self, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        """`tensor` on its device, or None once it is written to disk."""
        where = _placement(self.device_map, name)
        if where == "disk" and name in self.buffers:
            where = "cpu"
        if where == "disk":
            from accelerate.utils import offload_weight

            offload_weight(tensor.to("cpu"), name, str(self.folder), index=self.index)
            return None
        return tensor.to(f"cuda:{where}" if isinstance(where, int) else where)

    def dispatch(self, model: nn.Module) -> nn.Module:
        """`model` with accelerate's hooks: activations follow the blocks from device to device and
        offloaded weights come in for their forward. `model.hf_device_map` records the map."""
        from accelerate import dispatch_model
        from accelerate.utils import save_offload_index

        if self.folder is not None and self.index:
            save_offload_index(self.index, str(self.folder))
        model = dispatch_model(model, self.device_map, offload_dir=None if self.folder is None else str(self.folder))
        follow_devices(model)
        return model


def execution_device(module: nn.Module) -> torch.device | None:
    """The device accelerate runs `module` on (its hook's `execution_device`: for an offloaded
    module the main GPU, not where its weights rest), or None when no hook places it."""
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", ())]:  # an AlignDevicesHook, or one inside a SequentialHook
        where = getattr(h, "execution_device", None)
        if where is not None:
            return torch.device(f"cuda:{where}" if isinstance(where, int) else where)
    return None


def caches_to_blocks(model: LLaDAModel, kv_cache: KVCache) -> None:
    """Move each layer's buffers of `kv_cache` to the device its block runs on, in the cache (once:
    a layer already there is left as it is, so its buffers keep their addresses)."""
    for i, block in enumerate(model.transformer.blocks):
        where = execution_device(block)
        k, v = kv_cache.layers[i]
        if where is not None and k.device != where:
            kv_cache.layers[i] = (k.to(where), v.to(where))


def follow_devices(model: LLaDAModel) -> LLaDAModel:
    """Add to a model spread over devices (accelerate's hooks in place) the hooks it needs beyond
    them: before each forward with a `kv_cache`, `caches_to_blocks`; with a tied head, the final
    norm's output moved to the embedding's device. Returns the model."""

    def caches(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if kwargs.get("kv_cache") is not None:
            caches_to_blocks(model, kwargs["kv_cache"])

    model.register_forward_pre_hook(caches, with_kwargs=True)
    if model.config.weight_tying:
        embedding = model.transformer.wte
        model.transformer.ln_f.register_forward_hook(lambda module, args, out: out.to(embedding.weight.device))
    return model

"""A checkpoint's trainer state (optimizer, LR schedule, GradScaler, random generators), written and
read back as data; `Checkpoints` (checkpoints.py) calls `save` and `load` with the objects trained.

    trainer/optimizer.bin        the optimizer's state dict (torch.save; read with weights_only=True)
    trainer/optimizer_0/         instead, under FSDP with sharded state: torch.distributed.checkpoint shards
    trainer/scheduler.json       the LR scheduler's state dict
    trainer/scaler.json          fp16's GradScaler state
    trainer/rng_state_R.json     process R's Python, numpy, torch (and CUDA) generator states

Nothing a resume reads can run code. A checkpoint is often downloaded or shared, and unpickling runs
whatever a crafted file names, so torch files load with weights_only=True (tensors and plain
containers only), and what torch.distributed.checkpoint would unpickle unrestricted (its .metadata,
each value that is not a tensor) is first read through an allow-list. A checkpoint written by the
earlier llada, with accelerate's save_state (custom_checkpoint_0.pkl, random_states_R.pkl,
scaler.pt), is read the same way; a file holding anything but data is refused, naming it and the
globals it would have called.

Nothing a resume reads is taken on trust either: every value is checked against the object it is
for before it is loaded (`_misfit`: its type, finite numbers >= 0, lists as long as the object's
own), and the optimizer state against the model's parameters (`check_optimizer_state`: group
sizes, settings, and tensors of each parameter's shape, finite), so that a damaged or crafted
state is one CheckpointError rather than a traceback at the first step or a run trained on NaN.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llada.checkpoint.layout import check_regular, named_file, read_json
from llada.config import brief_repr
from llada.errors import CheckpointError, UserError

OPTIMIZER = "optimizer.bin"
SHARDED_OPTIMIZER = "optimizer_0"
SCHEDULER = "scheduler.json"
SCALER = "scaler.json"

# the earlier layout, accelerate's save_state with the scheduler registered for checkpointing
_OLD_SCHEDULER = "custom_checkpoint_0.pkl"
_OLD_SCALER = "scaler.pt"

# What torch.distributed.checkpoint's .metadata is made of: its own dataclasses, torch.Size, the
# dtype and layout of each tensor, and the checkpoint's path. torch dtypes are allowed by type.
_METADATA_GLOBALS = {
    *(("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    *(("pathlib", name) for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")),
}


def save(directory: Path, acc: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    """Write the trainer state into `directory`. Every process calls it: each writes its generators,
    the main process the optimizer, scheduler and scaler (under FSDP every process its optimizer
    shards, through accelerate)."""
    directory.mkdir(parents=True, exist_ok=True)
    if _fsdp(acc):
        from accelerate.utils import save_fsdp_optimizer

        save_fsdp_optimizer(acc.state.fsdp_plugin, acc, optimizer, model, str(directory))
    elif acc.is_main_process:
        torch.save(optimizer.state_dict(), directory / OPTIMIZER)
    if acc.is_main_process:
        _write_json(directory / SCHEDULER, scheduler.state_dict())
        if acc.scaler is not None:
            _write_json(directory / SCALER, acc.scaler.state_dict())
    _write_json(directory / f"rng_state_{acc.process_index}.json", _rng_state())


def load(directory: Path, acc: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    """Restore what `save` wrote into `directory` (or the earlier layout): the optimizer, scheduler
    and scaler, and this process's generators (left as they are when `directory` has none for it:
    the run had fewer processes).

    Raises CheckpointError naming a file that holds a Python object rather than data, or a state
    that does not fit the object it is for; a damaged file raises what its reader raises."""
    shown = f"{directory.name}/"
    if _fsdp(acc):
        _load_fsdp_optimizer(directory, acc, model, optimizer)
    else:
        saved = _torch_data(directory / OPTIMIZER, shown + OPTIMIZER)
        check_optimizer_state(saved, optimizer, shown + OPTIMIZER)
        optimizer.load_state_dict(saved)
    _restore(scheduler, _json_or_torch(directory, SCHEDULER, _OLD_SCHEDULER), shown + SCHEDULER)
    if acc.scaler is not None and ((directory / SCALER).exists() or (directory / _OLD_SCALER).exists()):
        _restore(acc.scaler, _json_or_torch(directory, SCALER, _OLD_SCALER), shown + SCALER)
    rank = acc.process_index
    new, old = directory / f"rng_state_{rank}.json", directory / f"random_states_{rank}.pkl"
    if new.exists():
        state = read_json(new)
        _set_rng_state(state["python"], state["numpy"], state["torch"], state.get("cuda"))
    elif old.exists():
        state = _torch_data(old, shown + old.name, arrays=True)
        _set_rng_state(state["random_state"], state["numpy_random_seed"], state["torch_manual_seed"],
                       state.get("torch_cuda_manual_seed"))


def read_sharded(state: dict[str, Any], directory: Path, shown: str | None = None) -> None:
    """Fill `state` (a state dict of the right structure, its tensors the right shards) in place
    from the torch.distributed.checkpoint directory `directory`, as `dcp.load` does, reading only
    data: its .metadata through an allow-list of DCP's own metadata classes, each value that is not
    a tensor with weights_only=True (DCP reads tensors that way itself).

    Raises CheckpointError naming a file (`shown`, default `directory`) that holds anything else."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    shown = shown or str(directory)
    for meta in sorted(p for p in directory.iterdir() if p.name.endswith(".metadata")):  # global and per rank
        check_regular(meta)
        with _refusing(f"{shown}/{meta.name}"):
            metadata = _MetadataUnpickler(io.BytesIO(meta.read_bytes())).load()
        _check_storage_paths(metadata, directory, f"{shown}/{meta.name}")
    try:
        dcp.load(state, storage_reader=dcp.FileSystemReader(directory), planner=_data_only_planner(shown))
    except CheckpointException as e:  # a BaseException, wrapping what each process's reads raised
        first = next(iter(e.failures.values()))[0] if e.failures else e
        if isinstance(first, CheckpointError):
            raise first from None
        raise CheckpointError(f"{shown} does not load ({type(first).__name__}: {first_line(first)})") from None


def _check_storage_paths(metadata: Any, directory: Path, shown: str) -> None:
    """Refuse a DCP .metadata (`shown`) naming a storage file that is not a regular file inside
    `directory` (DCP joins each relative_path to it, so `../x` would read outside)."""
    for info in (getattr(metadata, "storage_data", None) or {}).values():
        name = getattr(info, "relative_path", None)
        try:
            check_regular(named_file(directory, name, shown))
        except UserError as e:
            raise CheckpointError(f"{shown} names {brief_repr(name)}: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    """The first line of what `e` says (an error message fit for one line), or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ------------------------------------------------------------------------------------------- reading


class _NotData(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list."""


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles only what DCP's .metadata is made of (`_METADATA_GLOBALS`, torch dtypes)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_GLOBALS or module == "torch" and isinstance(getattr(torch, name, None),
                                                                                   torch.dtype):
            return super().find_class(module, name)
        raise _NotData(f"{module}.{name}")


@contextmanager
def _refusing(name: str, source: Path | bytes | None = None, allowed: tuple = ()) -> Iterator[None]:
    """A restricted unpickling inside that meets anything but data becomes one CheckpointError
    naming file `name` and the globals it would have called (`_refused_globals` of the torch file
    `source`; `allowed`: globals the reading allowed besides torch's own); other errors (a damaged
    file) pass."""
    try:
        yield
    except pickle.UnpicklingError as e:
        if not isinstance(e, _NotData) and "Weights only load failed" not in str(e):
            raise
        what = str(e) if isinstance(e, _NotData) else _refused_globals(e, source, allowed)
        raise CheckpointError(f"{name} holds a Python object ({what}), not data; it was not loaded") from None


def _refused_globals(error: Exception, source: Path | bytes | None, allowed: tuple) -> str:
    """What torch's weights-only reader refused in torch file `source`: the globals it names that
    torch does not allow (read from its pickle, nothing run), or those torch's message names."""
    if source is not None:
        try:
            with torch.serialization.safe_globals(list(allowed)):
                found = torch.serialization.get_unsafe_globals_in_checkpoint(
                    io.BytesIO(source) if isinstance(source, bytes) else source)
            if found:
                return ", ".join(sorted(found))
        except Exception:  # noqa: BLE001, S110 - not a torch zip file: torch's message says what it refused
            pass
    text = str(error)
    found = re.findall(r"GLOBAL ([\w.]+)", text) or [f"pickle opcode {n}" for n in
                                                     re.findall(r"Unsupported operand (\d+)", text)]
    return ", ".join(dict.fromkeys(found)) or "something torch's weights-only reader does not allow"


def _torch_data(path: Path, name: str, arrays: bool = False) -> Any:
    """A torch file read with weights_only=True; `arrays`: numpy arrays allowed too (accelerate's
    allow-list, for the RNG states it pickled)."""
    check_regular(path)
    if arrays:
        from accelerate.utils import load as load_with_arrays
        from accelerate.utils import other

        with _refusing(name, path, tuple(getattr(other, "TORCH_SAFE_GLOBALS", ()))):  # what it allows
            return load_with_arrays(path, map_location="cpu")
    with _refusing(name, path):
        return torch.load(path, map_location="cpu", weights_only=True)


def _json_or_torch(directory: Path, name: str, old_name: str) -> Any:
    """`directory`/`name`, or else the earlier layout's torch file `old_name`."""
    if (directory / name).exists() or not (directory / old_name).exists():
        return read_json(directory / name)
    return _torch_data(directory / old_name, f"{directory.name}/{old_name}")


def _restore(obj: Any, state: Any, name: str) -> None:
    """`obj.load_state_dict(state)`, once `state` is known to fit: a dict whose values are like
    obj's own (`_misfit`: the type, finite numbers >= 0, lists as long), and no key that would
    replace another attribute of obj (a scheduler sets every key as an attribute)."""
    own = obj.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError(f"{name} holds a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        why = _misfit(value, own[key]) if key in own else None
        if why is not None:
            raise CheckpointError(f"{name}: {key!r} is {brief_repr(value)}, where {why} belongs")
        if key not in own and hasattr(obj, key):
            raise CheckpointError(f"{name}: {key!r} is not part of a {type(obj).__name__}'s state")
    obj.load_state_dict(state)


def check_optimizer_state(saved: Any, optimizer: Any, name: str) -> None:
    """Refuse optimizer state `saved` (read from `name`) unless it fits `optimizer`, the one built
    for the model: as many parameter groups of as many parameters, each setting like the group's
    own (`_misfit`), and states of its parameters only, each tensor of its parameter's shape,
    floating point and finite. (torch checks the group sizes alone; the rest would fail, or train
    on NaN, at the first step.)"""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), list):
        raise CheckpointError(f"{name} holds no optimizer state (a dict of state and param_groups)")
    groups = optimizer.param_groups
    if len(saved["param_groups"]) != len(groups):
        raise CheckpointError(f"{name} has {len(saved['param_groups'])} parameter groups; the optimizer of "
                              f"this model has {len(groups)}")
    params: dict[int, torch.Tensor] = {}
    for k, (mine, own) in enumerate(zip(saved["param_groups"], groups, strict=True)):
        ids = mine.get("params") if isinstance(mine, dict) else None
        if not isinstance(ids, list) or len(ids) != len(own["params"]) or not all(map(_is_index, ids)):
            raise CheckpointError(f"{name}: param_groups[{k}] does not list the {len(own['params'])} parameters "
                                  "of the optimizer's group")
        params.update(zip(ids, own["params"], strict=True))
        for key, value in mine.items():
            why = _misfit(value, own[key]) if key in own and key != "params" else None
            if why is not None:
                raise CheckpointError(f"{name}: param_groups[{k}][{key!r}] is {brief_repr(value)}, where {why} belongs")
    for index, entry in saved["state"].items():
        param = params.get(index) if _is_index(index) else None
        if param is None or not isinstance(entry, dict):
            raise CheckpointError(f"{name}: a state for parameter {brief_repr(index)}, which the optimizer has none of")
        for key, value in entry.items():
            why = _state_misfit(key, value, param)
            if why is not None:
                raise CheckpointError(f"{name}: the {key!r} of parameter {index} is {_describe(value)}, where {why} "
                                      "belongs")


def _state_misfit(key: str, value: Any, param: torch.Tensor) -> str | None:
    """What an optimizer state tensor `value` of `param` is not: a finite count >= 0 (`step`), or a
    finite floating-point tensor of the parameter's shape."""
    if key == "step":
        number = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
        return _misfit(number, 0.0) and "a step count (a finite number >= 0)"
    if not isinstance(value, torch.Tensor) or value.shape != param.shape or not value.is_floating_point() \
            or not bool(torch.isfinite(value).all()):
        return f"a finite floating-point tensor of the parameter's shape {tuple(param.shape)}"
    return None


def _misfit(value: Any, own: Any) -> str | None:
    """What value `value` of a saved state should be, when it is not like `own`, the live object's:
    finite numbers >= 0 (integers where own is one), booleans, strings, lists as long as own's
    with each item like own's; null where own is null (or a boolean: a setting such as `fused` may
    be either). None when it fits."""
    if own is None or isinstance(own, bool):
        ok = isinstance(value, bool) or value is None and own is None
        return None if ok else ("null or true/false" if own is None else "true or false")
    if isinstance(own, int | float):
        integer = isinstance(own, int)
        ok = _is_index(value) or not integer and isinstance(value, float) and math.isfinite(value) and value >= 0
        return None if ok else ("an integer >= 0" if integer else "a finite number >= 0")
    if isinstance(own, list | tuple):
        if not isinstance(value, list | tuple) or len(value) != len(own):
            return f"a list of {len(own)}"
        whys = [_misfit(v, o) for v, o in zip(value, own, strict=True)]
        why = next((w for w in whys if w is not None), None)
        return None if why is None else f"a list of {len(own)}, each {why}"
    if isinstance(own, str | dict):
        return None if isinstance(value, type(own)) else f"a {type(own).__name__}"
    return None if type(value) is type(own) else f"a {type(own).__name__}"


def _is_index(value: Any) -> bool:
    """An integer >= 0 (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _describe(value: Any) -> str:
    """A tensor by its shape and dtype, anything else shortened."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return brief_repr(value)


def _load_fsdp_optimizer(directory: Path, acc: Any, model: torch.nn.Module, optimizer: Any) -> None:
    """The optimizer state accelerate's `save_fsdp_optimizer` wrote: one file with a full state dict
    (accelerate reads it with weights_only=True), or DCP shards, read by `read_sharded` and set
    through torch's state-dict API (FSDP1 and FSDP2 alike)."""
    from accelerate.utils import load_fsdp_optimizer
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.fsdp import StateDictType

    plugin = acc.state.fsdp_plugin
    if plugin.state_dict_type == StateDictType.FULL_STATE_DICT:
        with _refusing(f"{directory.name}/{OPTIMIZER}"):
            load_fsdp_optimizer(plugin, acc, optimizer, model, str(directory))
        return
    options = StateDictOptions(cpu_offload=getattr(plugin.state_dict_config, "offload_to_cpu", False))
    state = {"optimizer": get_optimizer_state_dict(model, optimizer.optimizer, options=options)}
    read_sharded(state, directory / SHARDED_OPTIMIZER, f"{directory.name}/{SHARDED_OPTIMIZER}")
    set_optimizer_state_dict(model, optimizer.optimizer, state["optimizer"], options=options)


def _data_only_planner(shown: str) -> Any:
    """DCP's default load planner, reading each value that is not a tensor with weights_only=True
    before DCP reads it (unrestricted)."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class DataOnlyPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            data = value.getvalue()
            file = self.metadata.storage_data[read_item.storage_index].relative_path
            with _refusing(f"{shown}/{file} ({read_item.dest_index.fqn})", data):
                torch.load(io.BytesIO(data), weights_only=True)
            super().load_bytes(read_item, io.BytesIO(data))

    return DataOnlyPlanner()


# ------------------------------------------------------------------------------------------- helpers


def _fsdp(acc: Any) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data) + "\n")


def _rng_state() -> dict[str, Any]:
    """This process's generator states as JSON values (Python floats print exactly)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(python: Any, numpy: Any, cpu: Any, cuda: Any) -> None:
    """Set the Python, numpy, torch and CUDA generators (JSON lists or the earlier layout's objects)."""
    version, internal, gauss = python
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = numpy
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.as_tensor(cpu, dtype=torch.uint8))
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in cuda])

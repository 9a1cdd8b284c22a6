"""A checkpoint's trainer state (optimizer, LR schedule, GradScaler, random generators), written and
read back as data.

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
scaler.pt), is read the same way; a file holding anything but data is refused, naming it.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llada.errors import CheckpointError

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
        optimizer.load_state_dict(_torch_data(directory / OPTIMIZER, shown + OPTIMIZER))
    _restore(scheduler, _json_or_torch(directory, SCHEDULER, _OLD_SCHEDULER), shown + SCHEDULER)
    if acc.scaler is not None and ((directory / SCALER).exists() or (directory / _OLD_SCALER).exists()):
        _restore(acc.scaler, _json_or_torch(directory, SCALER, _OLD_SCALER), shown + SCALER)
    rank = acc.process_index
    new, old = directory / f"rng_state_{rank}.json", directory / f"random_states_{rank}.pkl"
    if new.exists():
        state = _read_json(new)
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
        with _refusing(f"{shown}/{meta.name}"):
            _MetadataUnpickler(io.BytesIO(meta.read_bytes())).load()
    try:
        dcp.load(state, storage_reader=dcp.FileSystemReader(directory), planner=_data_only_planner(shown))
    except CheckpointException as e:  # a BaseException, wrapping what each process's reads raised
        first = next(iter(e.failures.values()))[0] if e.failures else e
        if isinstance(first, CheckpointError):
            raise first from None
        raise CheckpointError(f"{shown} does not load ({type(first).__name__}: {first_line(first)})") from None


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
def _refusing(name: str) -> Iterator[None]:
    """A restricted unpickling inside that meets anything but data becomes one CheckpointError
    naming file `name`; other errors (a damaged file) pass."""
    try:
        yield
    except pickle.UnpicklingError as e:
        text = str(e)
        if not isinstance(e, _NotData) and "Weights only load failed" not in text:
            raise
        found = re.search(r"GLOBAL (\S+) was not an allowed global", text) or \
            re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        what = found.group(1) if found else first_line(e)
        raise CheckpointError(f"{name} holds a Python object ({what}), not data; it was not loaded") from None


def _torch_data(path: Path, name: str, arrays: bool = False) -> Any:
    """A torch file read with weights_only=True; `arrays`: numpy arrays allowed too (accelerate's
    allow-list, for the RNG states it pickled)."""
    with _refusing(name):
        if arrays:
            from accelerate.utils import load as load_with_arrays

            return load_with_arrays(path, map_location="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_json(path: Path) -> Any:
    from llada.checkpoint import read_json

    return read_json(path)


def _json_or_torch(directory: Path, name: str, old_name: str) -> Any:
    """`directory`/`name`, or else the earlier layout's torch file `old_name`."""
    if (directory / name).exists() or not (directory / old_name).exists():
        return _read_json(directory / name)
    return _torch_data(directory / old_name, f"{directory.name}/{old_name}")


def _restore(obj: Any, state: Any, name: str) -> None:
    """`obj.load_state_dict(state)`, once `state` is known to fit: a dict whose values have the types
    of obj's own, and no key that would replace another attribute of obj (a scheduler sets every key
    as an attribute)."""
    own = obj.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError(f"{name} holds a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        if key in own and None not in (own[key], value) and type(value) is not type(own[key]):
            raise CheckpointError(f"{name}: {key!r} is a {type(value).__name__}, not a {type(own[key]).__name__}")
        if key not in own and hasattr(obj, key):
            raise CheckpointError(f"{name}: {key!r} is not part of a {type(obj).__name__}'s state")
    obj.load_state_dict(state)


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
            with _refusing(f"{shown}/{file} ({read_item.dest_index.fqn})"):
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

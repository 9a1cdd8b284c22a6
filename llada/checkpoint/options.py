"""Every option of loading a model directory in one place: `LoadOptions`, its defaults and its checks.

    opts = LoadOptions()                                      # as stored, on the CPU, with the tokenizer
    opts = LoadOptions(dtype="bfloat16", device="cuda")
    opts = LoadOptions.from_dict({"quantization": "int8", "compile": "true"})   # text from a flag or model_args
    bundle = llada.load("path/to/model", opts)                # or llada.load(path, dtype="bfloat16", ...)

`llada.load` takes these options (whole, or by name), and the commands that run a model (generate,
chat, serve, eval, poem) take the ones marked `flag` as their flags, generated from the fields
(`commands/flags.py`); lm-eval's `--model_args` take them by the same names. A new option is a
field here and the code that uses it (`checkpoint/loading.py`, `checkpoint/hub.py`).

The commands choose two values the library leaves alone: no device means CUDA when it is there
(the library: the CPU), and dtype "auto" means bfloat16 on a CUDA GPU (`runtime.inference_dtype`;
the library: as stored). Both rules are applied in `inference_options` below.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from llada import runtime
from llada.errors import CheckpointError

# dtype names the options take -> the torch dtype; "auto" keeps the stored one
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def _option(default: Any, text: str, flag: bool = True) -> Any:
    """A field with its one-line help; `flag`: whether the commands that run a model take it as a flag."""
    return field(default=default, metadata={"help": text, "flag": flag})


@dataclass(frozen=True)
class LoadOptions:
    """How a model directory is opened, validated on construction (a one-line `CheckpointError`
    names the option and what is allowed). Immutable: derive variants with `replace`. A torch.dtype
    and a torch.device are taken too, and kept by their names."""

    dtype: str = _option("auto", "auto, float32, bfloat16 or float16 (or bf16, fp16, fp32); auto keeps the stored "
                                 "dtype, except in the commands that run a model on a CUDA GPU: bfloat16")
    device: str | None = _option(None, "cpu, cuda, cuda:N or mps: where the weights are streamed to (default: the "
                                       "CPU; in the commands that run a model, cuda when available)")
    revision: str | None = _option(None, "a branch, tag or commit when the model is a Hugging Face Hub id "
                                         "(default: main)")
    quantization: str | None = _option(None, "int8 or int4: the blocks' Linear layers quantized weight-only "
                                             "(the quant extra, torchao; int4 on the CPU only)")
    compile: bool = _option(False, "compile each Transformer block (torch.compile; the first calls pay the "
                                   "compilation)")
    cache_dir: str | None = _option(None, "where a Hugging Face Hub id is downloaded to (default: the Hugging Face "
                                          "cache, HF_HUB_CACHE)")
    local_files_only: bool = _option(False, "open a Hugging Face Hub id from what the cache already holds, never "
                                            "contacting the Hub (as transformers' local_files_only)")
    # llada.load's alone (flag=False): a device map and its budget are Python values, and every
    # command needs the tokenizer
    device_map: str | dict[str, Any] | None = _option(None, (
        "instead of device: auto (blocks balanced over the GPUs of max_memory, then the CPU, then disk) or a "
        "dict of module name -> GPU index, cpu or disk; blocks are never split (llada.placement)"), flag=False)
    max_memory: dict[int | str, int | str] | None = _option(None, (
        "the budget of device_map auto, e.g. {0: '70GiB', 'cpu': '200GiB'}"), flag=False)
    offload_folder: str | None = _option(None, "where the weights a device_map puts on disk are written",
                                         flag=False)
    tokenizer: bool = _option(True, "load the tokenizer too (false: the model alone)", flag=False)

    def __post_init__(self) -> None:
        for name, value in _normalized(self).items():
            object.__setattr__(self, name, value)
        for check in (_check_types, _check_values, _check_placement):
            check(self)

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The dtype the weights are converted to, or None to keep the stored one ("auto")."""
        return resolve_dtype(self.dtype)

    # ------------------------------------------------------------------------------- conversions
    def replace(self, **changes: Any) -> LoadOptions:
        """A copy with `changes` applied (validated); unknown names raise CheckpointError."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every option by name; `LoadOptions(**to_dict())` gives the same options."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None, **more: Any) -> LoadOptions:
        """Options from a mapping (flags, lm-eval's `--model_args`, YAML): a switch given as the text
        "true" or "false" reads as that boolean, "none" or "" clears an option that may be None;
        unknown keys raise CheckpointError."""
        if data is not None and not isinstance(data, Mapping):
            raise CheckpointError(f"load options must be a mapping of option names to values, got "
                                  f"{type(data).__name__}")
        values = {**(data or {}), **more}
        _check_names(values)
        return cls(**{k: _from_text(k, v) for k, v in values.items()})

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each option's one-line description (the commands' --help)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}


LOAD_OPTION_NAMES = tuple(f.name for f in fields(LoadOptions))
# The options the commands that run a model take as flags (`--dtype`, `--device`, ...).
FLAG_NAMES = tuple(f.name for f in fields(LoadOptions) if f.metadata["flag"])
# Each option's type, None allowed or not (the flags' annotations, and `_check_types`).
OPTION_TYPES: dict[str, Any] = typing.get_type_hints(LoadOptions)
_TEXT = ("revision", "offload_folder", "cache_dir")  # free text: a non-empty string when given


# -------------------------------------------------------------------------------- validation


def _check_names(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(LOAD_OPTION_NAMES))
    if unknown:
        raise CheckpointError(f"unknown load option(s) {', '.join(map(str, unknown))}; the options are "
                              f"{', '.join(LOAD_OPTION_NAMES)}")


def _from_text(name: str, value: Any) -> Any:
    """A value given as text (a flag, `--model_args`) as the option's type: "true"/"false" for a
    switch, "none"/"" for an option that may be None. Anything else is left for the checks."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if OPTION_TYPES[name] is bool and word in ("true", "false"):
        return word == "true"
    if word in ("none", "null", "") and _optional(name):
        return None
    return value


def _optional(name: str) -> bool:
    return type(None) in typing.get_args(OPTION_TYPES[name])


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The torch dtype of a dtype option: None for "auto" (or None), which keeps the stored one;
    else float32, bfloat16 or float16, by name, alias (fp32, bf16, fp16) or torch.dtype."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise CheckpointError(f"unsupported dtype {dtype!r}; choose one of: auto, float32, bfloat16, float16")


def _normalized(o: LoadOptions) -> dict[str, Any]:
    """The options in their one spelling: dtype "auto" or a full name (whether None, an alias or a
    torch.dtype was given), a torch.device and a path (offload_folder, cache_dir) as text."""
    dtype = resolve_dtype(o.dtype)
    out: dict[str, Any] = {"dtype": "auto" if dtype is None else str(dtype).removeprefix("torch.")}
    if isinstance(o.device, torch.device):
        out["device"] = str(o.device)
    out.update({f.name: os.fspath(getattr(o, f.name)) for f in fields(o) if isinstance(getattr(o, f.name), os.PathLike)})
    return out


def _check_types(o: LoadOptions) -> None:
    for name in (n for n, kind in OPTION_TYPES.items() if kind is bool):
        if not isinstance(getattr(o, name), bool):
            raise CheckpointError(f"{name} must be true or false, got {getattr(o, name)!r}")
    for name in _TEXT:
        value = getattr(o, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise CheckpointError(f"{name} must be a non-empty string, got {value!r}")
    if o.device_map is not None and not isinstance(o.device_map, (str, dict)):
        raise CheckpointError(f"device_map must be 'auto' or a dict of module name -> device, got {o.device_map!r}")
    if o.max_memory is not None and not isinstance(o.max_memory, dict):
        raise CheckpointError(f"max_memory must be a dict of device -> budget, got {o.max_memory!r}")


def _check_values(o: LoadOptions) -> None:
    runtime.check_quantization(o.quantization)
    runtime.check_device(o.device)


def _check_placement(o: LoadOptions) -> None:
    """The options that do not go together: a device map places every module itself."""
    if o.device_map is not None and o.device is not None:
        raise CheckpointError("give device or device_map, not both: a device_map places every module itself")
    if o.device_map is not None and (o.quantization is not None or o.compile):
        raise CheckpointError(f"{'quantization' if o.quantization is not None else 'compile'} with a device_map is "
                              "not supported yet; give one of them")
    if o.device_map is None and (o.max_memory is not None or o.offload_folder is not None):
        raise CheckpointError("max_memory and offload_folder apply with device_map; give device_map='auto' too")


def inference_options(flags: Mapping[str, Any]) -> LoadOptions:
    """The options a command that only runs a model loads it with, from its load flags (None: not
    given): without a device or device_map, cuda when this machine has it, else the CPU; a device
    given must be one this machine has (the error names --device); dtype "auto" as
    `runtime.inference_dtype` chooses on that device."""
    values = {k: v for k, v in flags.items() if v is not None}
    if values.get("device") is not None:
        runtime.check_device(values["device"], "--device")
    elif values.get("device_map") is None:
        values["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    options = LoadOptions.from_dict(values)
    return options.replace(dtype=runtime.inference_dtype(options.dtype, options.device))

"""`LoadOptions` as command-line flags: one keyword flag per option marked `flag` (`--dtype`,
`--device`, `--revision`, `--quantization`, `--compile`, ...), generated from the options' fields,
so `llada generate`, `chat`, `serve`, `eval` and `poem` take the same loading options by the same
names with the same help, and a new option needs no edit here or in the commands.

The commands only run the model they load, and choose what the library leaves alone
(`inference_options`): no device means CUDA when this machine has it, and dtype "auto" means
bfloat16 on a CUDA GPU (`runtime.inference_dtype`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from llada.checkpoint.options import FLAG_NAMES, OPTION_TYPES, LoadOptions
from llada.runtime import check_device, inference_dtype


def load_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give `func(..., **flags)` one keyword flag per `LoadOptions` field marked `flag`, each
    defaulting to None ("as LoadOptions' default"), with its help text in the docstring's Args;
    `func` takes them out of `flags` with `pop_load_flags` and makes them options with
    `inference_options`. Combines with `sampling.flags.sampler_flags` (put that one outside)."""
    helps = LoadOptions.help()
    params = [p for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
    for name in FLAG_NAMES:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=OPTION_TYPES[name] | None))
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    func.__doc__ = _with_args(func.__doc__ or "", [f"{name}: {helps[name]}" for name in FLAG_NAMES])
    return func


def _with_args(doc: str, entries: list[str]) -> str:
    """`doc` with `entries` added at the end of its `Args:` section (before a paragraph that follows
    it, which would otherwise end the section and hide their help), or in a new one."""
    lines = doc.rstrip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
    if start is None:
        return "\n".join([*lines, "", "    Args:", *(f"        {e}" for e in entries)]) + "\n"
    indent = len(lines[start]) - len(lines[start].lstrip()) + 4
    end = start + 1
    while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) >= indent:
        end += 1
    return "\n".join([*lines[:end], *(" " * indent + e for e in entries), *lines[end:]]) + "\n"


def pop_load_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The load flags among a command's `flags`, taken out of them (the rest are its sampler flags)."""
    return {name: flags.pop(name) for name in FLAG_NAMES if name in flags}


def inference_options(flags: Mapping[str, Any]) -> LoadOptions:
    """The options a command that only runs a model loads it with, from its load flags (None: not
    given): without a device or device_map, cuda when this machine has it, else the CPU; a device
    given must be one this machine has (the error names --device); dtype "auto" as
    `runtime.inference_dtype` chooses on that device."""
    values = {k: v for k, v in flags.items() if v is not None}
    if values.get("device") is not None:
        check_device(values["device"], "--device")
    elif values.get("device_map") is None:
        values["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    options = LoadOptions.from_dict(values)
    return options.replace(dtype=inference_dtype(options.dtype, options.device))

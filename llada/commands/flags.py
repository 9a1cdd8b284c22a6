"""The flags the commands share, generated from the options they set, and the output directory.

- `sampler_flags`: one keyword flag per `SamplerOptions` field, plus `--preset`, so `llada
  generate`, `chat` and `serve` take every sampler option by its own name with its own help;
- `load_flags`: one keyword flag per `LoadOptions` field marked `flag` (`--dtype`, `--device`,
  `--revision`, `--quantization`, `--compile`, ...), so every command that loads a model takes
  the same loading options by the same names;
- `output_dir`: a command's `--out_dir`, checked before the work starts.

A new option is a field in its options module; nothing here or in the commands changes. The
commands turn load flags into options with `checkpoint.options.inference_options`, which also
serves lm-eval's `--model_args`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llada.checkpoint.options import FLAG_NAMES, LoadOptions
from llada.checkpoint.options import OPTION_TYPES as LOAD_OPTION_TYPES
from llada.errors import UserError
from llada.sampling.options import (
    OPTION_NAMES,
    OPTION_TYPES,
    OPTIONAL_OPTIONS,
    SAMPLER_PRESETS,
    SamplerOptions,
)


def sampler_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give `func(..., **options)` one keyword flag per `SamplerOptions` field, plus `--preset`,
    each defaulting to None ("as the preset, else the default"), with its help text; `func` turns
    them into options with `options_from_flags`."""
    defaults, helps = SamplerOptions().to_dict(), SamplerOptions.help()
    params = [p for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
    lines = [f"        preset: sampler preset applied under the flags given: {', '.join(SAMPLER_PRESETS)}"]
    params.append(inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None))
    for name in OPTION_NAMES:
        # an optional option also takes the word "none", which clears it (over a preset's value)
        kind = OPTION_TYPES[name] | str if name in OPTIONAL_OPTIONS and OPTION_TYPES[name] is not str else OPTION_TYPES[name]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind | None))
        shown = "" if defaults[name] is None else f" (default: {defaults[name]})"
        lines.append(f"        {name}: {helps[name]}{shown}")
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    func.__doc__ = (func.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return func


def options_from_flags(flags: dict[str, Any]) -> SamplerOptions:
    """The SamplerOptions of the flags given (None: not given)."""
    return SamplerOptions.from_dict({k: v for k, v in flags.items() if v is not None})


def load_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give `func(..., **flags)` one keyword flag per `LoadOptions` field marked `flag`, each
    defaulting to None ("as LoadOptions' default"), with its help text in the docstring's Args;
    `func` takes them out of `flags` with `pop_load_flags` and makes them options with
    `checkpoint.options.inference_options`. Combines with `sampler_flags` (put that one outside)."""
    helps = LoadOptions.help()
    params = [p for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
    for name in FLAG_NAMES:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=LOAD_OPTION_TYPES[name] | None))
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


def output_dir(path: str | Path) -> Path:
    """`path` made ready for a command's results, at the start rather than after the work: a
    UserError when it is a file, lies under one, or cannot be created."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out_dir {path} is a file; give a directory (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out_dir {path}: cannot create it ({e.strerror or e})") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"--out_dir {path} is not writable; give another directory")
    return out

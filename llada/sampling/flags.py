"""`SamplerOptions` as command-line flags: one keyword flag per option, plus `--preset`, generated
from the options' fields, so `llada generate`, `llada chat` and `llada serve` take every option by
its own name, with its own help text, and a new option needs no edit here."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

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

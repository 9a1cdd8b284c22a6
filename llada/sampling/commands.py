"""`llada generate` and `llada chat`. Their sampler flags (`--steps`, `--preset fast`, ...) are
generated from `SamplerOptions`, so they are the options of every other surface, by name."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from typing import Any

from llada.errors import GenerationError


def sampler_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give `func(..., **options)` one keyword flag per `SamplerOptions` field, plus `--preset`,
    each defaulting to None ("as the preset, else the default"), with its help text; `func` turns
    them into options with `options_from_flags`."""
    from llada.sampling.options import OPTION_NAMES, SAMPLER_PRESETS, SamplerOptions

    defaults, helps = SamplerOptions().to_dict(), SamplerOptions.help()
    kinds = {f: type(v) if v is not None else str for f, v in defaults.items()}
    kinds.update({"steps": int, "block_length": int, "threshold": float, "factor": float, "seed": int})
    params = [p for p in inspect.signature(func).parameters.values() if p.kind is not p.VAR_KEYWORD]
    lines = [f"        preset: sampler preset applied under the flags given: {', '.join(SAMPLER_PRESETS)}"]
    params.append(inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None))
    for name in OPTION_NAMES:
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=kinds[name] | None))
        shown = "" if defaults[name] is None else f" (default: {defaults[name]})"
        lines.append(f"        {name}: {helps[name]}{shown}")
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    func.__doc__ = (func.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return func


def options_from_flags(flags: dict[str, Any]) -> Any:
    """The SamplerOptions of the flags given (None: not given)."""
    from llada.sampling.options import SamplerOptions

    return SamplerOptions.from_dict({k: v for k, v in flags.items() if v is not None})


def _load(model: str, device: str | None, dtype: str | None):
    from llada.checkpoint import load
    from llada.cli import resolve_device

    return load(model, dtype=dtype, device=resolve_device(device))


@sampler_flags
def generate(prompt: str, model: str = "runs/quickstart/sft/model", trace: bool = False, chat: bool = True,
             device: str | None = None, dtype: str | None = None, **options: Any) -> None:
    """Sample a response to PROMPT (the reverse process; left to right for an autoregressive model).

    Args:
        prompt: the user message (or plain text with --chat false)
        model: a model directory
        trace: show the canvas step by step
        chat: wrap the prompt in the chat template
        device: cpu or cuda (default: cuda when available)
        dtype: float32, bfloat16 or float16 (default: as stored)
    """
    from llada.sampling.text import decode_response, stream_text

    opts = options_from_flags(options)
    bundle = _load(model, device, dtype)
    state = None
    for state, text in stream_text(bundle.model, bundle.tokenizer, prompt, opts, chat=chat):
        if trace and not state.final:
            sys.stdout.write(f"\x1b[2K\rstep {state.step + 1:>3}  {text.replace(chr(10), '⏎')}")
            sys.stdout.flush()
            time.sleep(0.02)
    if trace:
        sys.stdout.write("\n")
    print(decode_response(bundle.tokenizer, state.canvas[0, state.prompt_length:], bundle.config.roles.stops))
    s = state.stats
    print(f"[{s.forwards} forward passes ({s.full_forwards} full, {s.cached_forwards} cached), "
          f"{s.tokens_per_forward:.2f} tokens per forward]", file=sys.stderr)


@sampler_flags
def chat(model: str = "runs/quickstart/sft/model", device: str | None = None, dtype: str | None = None,
         **options: Any) -> None:
    """Multi-turn chat in the terminal; an empty line, `exit` or end of input quits.

    Args:
        model: a model directory
        device: cpu or cuda
        dtype: float32, bfloat16 or float16
    """
    from llada.sampling.text import sample_text

    opts = options_from_flags(options)
    bundle = _load(model, device, dtype)
    messages: list[dict[str, str]] = []
    print("chat with the model; an empty line or `exit` quits")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line or line == "exit":
            break
        messages.append({"role": "user", "content": line})
        try:
            reply = sample_text(bundle.model, bundle.tokenizer, [messages], opts)[0]
        except GenerationError as e:
            print(f"error: {e}")
            messages.pop()
            continue
        print(f"llada> {reply}")
        messages.append({"role": "assistant", "content": reply})

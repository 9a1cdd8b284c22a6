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
    from llada.sampling.options import (
        OPTION_NAMES,
        OPTION_TYPES,
        OPTIONAL_OPTIONS,
        SAMPLER_PRESETS,
        SamplerOptions,
    )

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


def options_from_flags(flags: dict[str, Any]) -> Any:
    """The SamplerOptions of the flags given (None: not given)."""
    from llada.sampling.options import SamplerOptions

    return SamplerOptions.from_dict({k: v for k, v in flags.items() if v is not None})


def _load(model: str, device: str | None, dtype: str | None, revision: str | None = None,
          quantization: str | None = None, compile: bool = False):
    from llada.checkpoint import load
    from llada.cli import resolve_device
    from llada.runtime import inference_dtype

    device = resolve_device(device)
    return load(model, dtype=inference_dtype(dtype, device), device=device, revision=revision, quantization=quantization,
                compile=compile)


@sampler_flags
def generate(prompt: str, model: str = "runs/quickstart/sft/model", trace: bool = False, chat: bool = True,
             device: str | None = None, dtype: str | None = None, revision: str | None = None,
             quantization: str | None = None, compile: bool = False, **options: Any) -> None:
    """Sample a response to PROMPT (the reverse process; left to right for an autoregressive model).

    Args:
        prompt: the user message (or plain text with --chat false)
        model: a model directory
        trace: show the canvas step by step
        chat: wrap the prompt in the chat template
        device: cpu or cuda (default: cuda when available)
        dtype: float32, bfloat16 or float16 (default auto: bfloat16 on a CUDA GPU, as stored elsewhere)
        revision: a branch, tag or commit when --model is a Hugging Face Hub id
        quantization: int8 or int4: the blocks' Linear layers quantized weight-only (the quant extra, torchao; int4 on the CPU only)
        compile: compile each Transformer block (torch.compile; the first calls pay the compilation)
    """
    from llada.sampling.text import decode_response, stream_text

    opts = options_from_flags(options)
    bundle = _load(model, device, dtype, revision, quantization, compile)
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
         revision: str | None = None, quantization: str | None = None, compile: bool = False,
         **options: Any) -> None:
    """Multi-turn chat in the terminal: each answer is written as its text settles, left to right.
    An empty line, `exit` or end of input quits; /help lists the commands (/reset, /settings, /set).

    Args:
        model: a model directory
        device: cpu or cuda (default: cuda when available)
        dtype: float32, bfloat16 or float16 (default auto: bfloat16 on a CUDA GPU, as stored elsewhere)
        revision: a branch, tag or commit when --model is a Hugging Face Hub id
        quantization: int8 or int4: the blocks' Linear layers quantized weight-only (the quant extra, torchao; int4 on the CPU only)
        compile: compile each Transformer block (torch.compile; the first calls pay the compilation)
    """
    opts = options_from_flags(options)
    bundle = _load(model, device, dtype, revision, quantization, compile)
    _line_editing()
    session = _Chat(bundle, opts)
    print("chat with the model; an empty line or `exit` quits, /help lists the commands")
    while True:
        line = _read_line("you> ")
        if line is None or line in ("", "exit", "/exit", "/quit"):
            break
        if line.startswith("/"):
            session.command(line)
        else:
            session.turn(line)


CHAT_HELP = """commands:
  /reset              forget the conversation so far
  /settings           print the sampler options in use
  /set NAME VALUE     change one option, e.g. /set steps 32 or /set temperature 0.7
  /help               this list
  exit (or an empty line, or end of input) quits"""


def _line_editing() -> None:
    """Arrow keys, line editing and the history of this session for `input()` on a terminal."""
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (imported for its effect on input())
        except ImportError:  # Windows without pyreadline: plain input
            pass


def _read_line(prompt: str) -> str | None:
    """A line of the user's input, stripped; None at end of input. Input that is not UTF-8 text
    (a non-UTF-8 terminal or file) is a UserError."""
    from llada.errors import UserError

    try:
        line = input(prompt)
        line.encode("utf-8")  # bytes a surrogateescape stdin could not decode fail here
    except EOFError:
        return None
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise UserError("the input is not UTF-8 text; set a UTF-8 locale (LANG=C.UTF-8) or convert it "
                        "(iconv -t UTF-8)") from None
    return line.strip()


class _Chat:
    """One conversation: its messages and sampler options, the slash commands that change them."""

    def __init__(self, bundle: Any, options: Any) -> None:
        self.bundle, self.options = bundle, options
        self.messages: list[dict[str, str]] = []

    def turn(self, line: str) -> None:
        self.messages.append({"role": "user", "content": line})
        try:
            reply = stream_reply(self.bundle, self.messages, self.options)
        except GenerationError as e:
            print(f"error: {e}")
            self.messages.pop()
            return
        self.messages.append({"role": "assistant", "content": reply})

    def command(self, line: str) -> None:
        name, *args = line.split()
        if name == "/help":
            print(CHAT_HELP)
        elif name == "/reset":
            self.messages.clear()
            print("(the conversation is forgotten)")
        elif name == "/settings":
            print("\n".join(f"  {k} = {v}" for k, v in self.options.to_dict().items()))
        elif name == "/set" and len(args) == 2:
            self._set(*args)
        elif name == "/set":
            print("usage: /set NAME VALUE, e.g. /set steps 32; /settings lists the names")
        else:
            print(f"unknown command {name}; /help lists them")

    def _set(self, key: str, value: str) -> None:
        try:
            self.options = self.options.replace(**{key: value})
        except GenerationError as e:
            print(f"error: {e}")
            return
        print(f"  {key} = {getattr(self.options, key)}")


def stream_reply(bundle: Any, messages: list[dict[str, str]], options: Any, out: Any = None) -> str:
    """Answer `messages`, writing `llada> ` and then the answer to `out` (stdout) as its text
    settles: after each step, the text up to the first position still masked (or the end of the
    answer) is final, and what it adds is written. Returns the answer, as `sample_text` gives it."""
    from llada.sampling.text import decode_response, settled_text, stream_text

    out = out or sys.stdout
    stops, mask_id = bundle.config.roles.stops, bundle.config.roles.mask
    out.write("llada> ")
    out.flush()
    shown, state = "", None
    for state, _ in stream_text(bundle.model, bundle.tokenizer, messages, options):
        text = settled_text(bundle.tokenizer, state, mask_id, stops)
        if text.startswith(shown) and len(text) > len(shown):
            out.write(text[len(shown):])
            out.flush()
            shown = text
    reply = decode_response(bundle.tokenizer, state.canvas[0, state.prompt_length:], stops)
    # the whole answer is what was shown plus the rest; should decoding have joined the pieces
    # differently, the answer is written again in full
    out.write(reply[len(shown):] + "\n" if reply.startswith(shown) else f"\nllada> {reply}\n")
    out.flush()
    return reply

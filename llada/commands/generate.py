"""`llada generate` and `llada chat`. Their sampler flags (`--steps`, `--preset fast`, ...) are
generated from `SamplerOptions` (commands/flags.py) and their loading flags (`--dtype`, `--device`,
...) from `LoadOptions` (commands/flags.py), so they are the options of every other surface, by name."""

from __future__ import annotations

import sys
import time
from typing import Any

from llada.checkpoint import load
from llada.checkpoint.options import inference_options
from llada.commands.flags import load_flags, options_from_flags, pop_load_flags, sampler_flags
from llada.errors import GenerationError


@sampler_flags
@load_flags
def generate(prompt: str, model: str = "runs/quickstart/sft/model", trace: bool = False, chat: bool = True,
             **options: Any) -> None:
    """Sample a response to PROMPT (the reverse process; left to right for an autoregressive model).

    Args:
        prompt: the user message (or plain text with --chat false)
        model: a model directory
        trace: show the canvas step by step
        chat: wrap the prompt in the chat template
    """
    from llada.sampling.text import decode_response, stream_text

    how = inference_options(pop_load_flags(options))
    opts = options_from_flags(options)
    bundle = load(model, how)
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
@load_flags
def chat(model: str = "runs/quickstart/sft/model", **options: Any) -> None:
    """Multi-turn chat in the terminal: each answer is written as its text settles, left to right.
    An empty line, `exit` or end of input quits; /help lists the commands (/reset, /settings, /set).

    Args:
        model: a model directory
    """
    how = inference_options(pop_load_flags(options))
    opts = options_from_flags(options)
    bundle = load(model, how)
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

"""The `llada` command line: one subcommand per typed function, generated with jsonargparse.

Each subcommand is a plain function with type hints and a docstring in the module that owns the
work; its flags are its parameters (`--steps 64`), and `--config file.yaml` takes any of them from
YAML. Only the chosen subcommand's module is imported, so `llada --help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import io
import logging
import os
import re
import sys
import typing
from typing import Any

# name -> ("module:function", one-line summary shown by `llada --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("llada.commands.quickstart:quickstart",
                   "train a tokenizer and a small model on the built-in world, fine-tune it, answer questions"),
    "train": ("llada.commands.train:train", "pretrain with the masked diffusion objective (Eq. 3)"),
    "sft": ("llada.commands.train:sft", "supervised fine-tuning on chat data (Eq. 5)"),
    "generate": ("llada.commands.generate:generate", "sample a response with the reverse process"),
    "chat": ("llada.commands.generate:chat", "multi-turn chat in the terminal"),
    "eval": ("llada.commands.evaluate:evaluate",
             "score a model on the built-in tasks (ablations, AR baseline), write a report"),
    "reproduce": ("llada.commands.reproduce:reproduce",
                  "reproduce a claim of the paper on the built-in world: report, plot and figures"),
    "lm-eval": ("llada.commands.lm_eval:main", "lm-evaluation-harness with the `llada` model registered"),
    "poem": ("llada.commands.poem:poem_eval", "the reversal-poem task (Table 4): forward and reverse accuracy"),
    "serve": ("llada.commands.serve:serve", "an OpenAI-compatible HTTP server with a chat page that shows the denoising"),
    "convert": ("llada.commands.convert:convert",
                "re-save a model directory (dtype, shard size); a causal LM becomes a mask predictor"),
    "info": ("llada.commands.checkpoint:info", "print a model directory's config and parameter count"),
    "push": ("llada.commands.checkpoint:push", "upload a model directory to the Hugging Face Hub"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: llada <command> [--help] [options]", "",
             "Masked diffusion language models in the style of LLaDA.", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `llada <command> --help` for the options of one command; a boolean flag alone",
              "(`--trace`) means true. `llada --version` prints the version."]
    return "\n".join(lines)


def resolve(name: str):
    """The function behind subcommand `name`."""
    target, _ = COMMANDS[name]
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    """Run `llada ARGV`; the exit status: 0, 2 for a problem with what the user gave (one line on
    stderr, no traceback), 130 when interrupted."""
    try:
        try:
            code = _main(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as e:  # --help, and argparse inside lm-eval
            if not isinstance(e.code, (int, type(None))):
                raise
            code = e.code or 0
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except BrokenPipeError:  # `llada --help | head -1`: the reader has gone, and that is fine
        _drop_stdout()
        return 141  # as a shell reports a process ended by SIGPIPE
    return code


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from llada import __version__

        print(f"llada {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"llada: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from llada.errors import UserError

    try:
        _check_utf8(rest)
        func = resolve(name)
    except ModuleNotFoundError as e:  # an optional extra that is not installed
        print(f"llada {name}: needs {e.name!r}; install it with pip install 'llada[eval,serve]'", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"llada {name}: error: {e}", file=sys.stderr)
        return 2
    try:
        with _log_to_stderr(name):
            _run(name, func, rest)
    except UserError as e:  # a problem with what the user gave: one clear line, no traceback
        print(f"llada {name}: error: {e}", file=sys.stderr)
        return 2
    except argparse.ArgumentError as e:  # a flag the parser refused: one line too, the usage is one --help away
        print(f"llada {name}: error: {_one_line(str(e))} (see `llada {name} --help`)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llada {name}: interrupted", file=sys.stderr)
        return 130
    return 0


def _run(name: str, func, args: list[str]) -> None:
    if getattr(func, "parses_own_flags", False):  # lm-eval's command line
        func(args)
    elif hasattr(func, "config_class"):  # flags are the fields of a config dataclass
        _run_with_config_class(func, _bare_booleans(args, _config_booleans(func.config_class)), name)
    else:
        from jsonargparse import auto_parser

        parser = auto_parser(func, prog=f"llada {name}", as_positional=True, exit_on_error=False)
        values = _instantiate(parser, parser.parse_args(_bare_booleans(args, _signature_booleans(func))))
        values.pop("config", None)
        values.pop("subcommand", None)
        func(**values)


def _instantiate(parser, ns):
    """The parsed flags with their dataclasses built (`--world.n_people 1`); a value a dataclass
    refuses in its __post_init__ (a ValueError) is the user's to fix: a UserError."""
    from llada.errors import UserError

    try:
        return parser.instantiate_classes(ns)
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        reasons = [ln[2:] for ln in lines if ln.startswith("- ") and "NoneType" not in ln]  # a Union's members
        raise UserError(reasons[0] if reasons else lines[0] if lines else repr(e)) from None


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def _check_utf8(args: list[str]) -> None:
    """Refuse arguments that are not UTF-8 text (Python hands such bytes over as lone surrogates)."""
    from llada.errors import UserError

    for a in args:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            raw = a.encode("utf-8", "surrogateescape")
            raise UserError(f"the argument {raw!r} is not valid UTF-8 text; give prompts, paths and values "
                            "in UTF-8 (is the terminal's locale UTF-8?)") from None


@contextlib.contextmanager
def _log_to_stderr(name: str):
    """The library's log records (warnings, and notices such as "resumed from ... at step N") as
    `llada NAME: message` lines on stderr while a command runs."""
    logger = logging.getLogger("llada")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"llada {name}: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ------------------------------------------------------------------------- flags and their values

_BOOLEAN_WORDS = {"true": "true", "false": "false", "yes": "true", "no": "false", "on": "true", "off": "false",
                  "1": "true", "0": "false", "null": "null", "none": "null"}


def _bare_booleans(args: list[str], flags: set[str]) -> list[str]:
    """`--trace` alone means `--trace true`: a boolean flag not followed by a value gets one
    (1 and 0 read as true and false); everything after `--` is left alone."""
    out: list[str] = []
    for i, a in enumerate(args):
        if a == "--":
            return out + args[i:]
        if out and out[-1] in flags and a.lower() in _BOOLEAN_WORDS:  # the flag's own value
            out.append(_BOOLEAN_WORDS[a.lower()])
            continue
        out.append(a)
        if a in flags and (i + 1 == len(args) or args[i + 1].lower() not in _BOOLEAN_WORDS):
            out.append("true")
    return out


def _is_boolean(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.replace(" ", "") in ("bool", "bool|None", "None|bool", "Optional[bool]")
    return annotation is bool or set(typing.get_args(annotation)) == {bool, type(None)}


def _signature_booleans(func) -> set[str]:
    """`--name` of each boolean parameter of `func`."""
    return {f"--{p.name}" for p in inspect.signature(func).parameters.values() if _is_boolean(p.annotation)}


def _config_booleans(cls, prefix: str = "") -> set[str]:
    """`--name` of each boolean field of a config dataclass, nested ones as `--world.pronouns`."""
    out = set()
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls).get(f.name, f.type)
        if dataclasses.is_dataclass(kind):
            out |= _config_booleans(kind, f"{prefix}{f.name}.")
        elif _is_boolean(kind):
            out.add(f"--{prefix}{f.name}")
    return out


def _one_line(message: str) -> str:
    """jsonargparse's several-line account of a refused value as one line: `--steps: expected int, got 'x'`."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    key = re.fullmatch(r'Parser key "(.+)":', lines[0]) if lines else None
    if key is None:  # `Parser key "config": File does not exist: ...` on one line, or argparse's own words
        return re.sub(r'^Parser key "(.+?)":\s*', r"--\1: ", "; ".join(lines))
    wanted = []
    for m in re.finditer(r"Expected a (?:<class '(\w+)'>|typing\.Literal\[(.*?)\]\.)", message):
        if m[1] and m[1] != "NoneType":
            wanted.append(m[1])
        elif m[2]:
            wanted.append(f"one of {m[2]}")
    given = re.search(r"(?:Given value|Got value): (.*)$", message, re.M)
    shown = f"got {given[1].strip()!r}" if given else "; ".join(lines[1:])
    return f"--{key[1]}: " + (f"expected {' or '.join(dict.fromkeys(wanted))}, " if wanted else "") + shown


def _run_with_config_class(func, args: list[str], name: str) -> None:
    """`func(cfg)` where cfg's fields are flat flags, and `--config file.yaml` supplies any of them;
    each field's attribute docstring is its --help."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings


    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog=f"llada {name}", description=(func.__doc__ or "").strip(), exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_class_arguments(func.config_class, nested_key=None, fail_untyped=False)
    if hasattr(func, "prepare_parser"):  # the command's own changes: a hidden flag, a default
        func.prepare_parser(parser, args)
    ns = _instantiate(parser, parser.parse_args(args))  # nested dataclasses (--world.n_people) built
    values = {k: v for k, v in vars(ns).items() if k != "config" and not k.startswith("__")}
    if hasattr(func, "check_values"):  # what the command requires of the values together
        values = func.check_values(values)
    func(func.config_class(**values))


if __name__ == "__main__":
    raise SystemExit(main())

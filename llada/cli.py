"""The `llada` command line: one subcommand per typed function, generated with jsonargparse.

Each subcommand is a plain function with type hints and a docstring in the module that owns the
work; its flags are its parameters (`--steps 64`), and `--config file.yaml` takes any of them from
YAML. Only the chosen subcommand's module is imported, so `llada --help` is instant.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function", one-line summary shown by `llada --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("llada.quickstart:quickstart",
                   "train a tokenizer and a small model on the built-in world, fine-tune it, answer questions"),
    "train": ("llada.train:train", "pretrain with the masked diffusion objective (Eq. 3)"),
    "sft": ("llada.train:sft", "supervised fine-tuning on chat data (Eq. 5)"),
    "generate": ("llada.sampling.commands:generate", "sample a response with the reverse process"),
    "chat": ("llada.sampling.commands:chat", "multi-turn chat in the terminal"),
    "eval": ("llada.evaluation.commands:evaluate",
             "score a model on the built-in tasks (ablations, AR baseline), write a report"),
    "reproduce": ("llada.evaluation.reproduce:reproduce",
                  "reproduce a claim of the paper on the built-in world: report, plot and figures"),
    "lm-eval": ("llada.evaluation.harness:main", "lm-evaluation-harness with the `llada` model registered"),
    "poem": ("llada.evaluation.poem:poem_eval", "the reversal-poem task (Table 4): forward and reverse accuracy"),
    "serve": ("llada.serve.app:serve", "an OpenAI-compatible HTTP server with a chat page that shows the denoising"),
    "convert": ("llada.checkpoint:convert", "re-save a model directory (dtype, shard size)"),
    "info": ("llada.checkpoint:info", "print a model directory's config and parameter count"),
    "push": ("llada.checkpoint:push", "upload a model directory to the Hugging Face Hub"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: llada <command> [--help] [options]", "",
             "Masked diffusion language models in the style of LLaDA.", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `llada <command> --help` for the options of one command."]
    return "\n".join(lines)


def resolve(name: str):
    """The function behind subcommand `name`."""
    target, _ = COMMANDS[name]
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"llada: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from jsonargparse import CLI

    from llada.errors import UserError

    try:
        func = resolve(name)
    except ModuleNotFoundError as e:  # an optional extra that is not installed
        print(f"llada {name}: needs {e.name!r}; install it with pip install 'llada[eval,serve]'", file=sys.stderr)
        return 2
    try:
        if name == "lm-eval":  # lm-eval parses its own flags
            func(rest)
        elif hasattr(func, "config_class"):  # flags are the fields of a config dataclass
            _run_with_config_class(func, rest, name)
        else:
            CLI(func, args=rest, prog=f"llada {name}", as_positional=True)
    except UserError as e:  # a problem with what the user gave: one clear line, no traceback
        print(f"llada {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llada {name}: interrupted", file=sys.stderr)
        return 130
    return 0


def _run_with_config_class(func, args: list[str], name: str) -> None:
    """`func(cfg)` where cfg's fields are flat flags, and `--config file.yaml` supplies any of them."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=f"llada {name}", description=(func.__doc__ or "").strip())
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_class_arguments(func.config_class, nested_key=None, fail_untyped=False)
    ns = parser.instantiate_classes(parser.parse_args(args))  # nested dataclasses (--world.n_people) built
    values = {k: v for k, v in vars(ns).items() if k != "config" and not k.startswith("__")}
    func(func.config_class(**values))


if __name__ == "__main__":
    raise SystemExit(main())

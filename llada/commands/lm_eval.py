"""`llada lm-eval`: lm-eval's own command line with the `llada` model registered
(`llada/evaluation/harness.py`), and `--preset NAME` for the paper's settings of each task."""

from __future__ import annotations

import sys

import torch.distributed as dist
from lm_eval.__main__ import cli_evaluate

import llada.evaluation.harness  # noqa: F401  (registers the model `llada`)
from llada.errors import UserError
from llada.evaluation.presets import PRESET_HELP, TASKS_DIR, preset_argv


def main(argv: list[str] | None = None) -> None:
    """`llada lm-eval ...`: lm-eval's command line, with the `llada` model registered.

    `--preset NAME` (llada/evaluation/presets.py) applies the paper's settings to each task of
    --tasks; flags given explicitly win over the preset's. Tasks that need different settings run
    as separate lm-eval runs, one after another, each printing its own results table. Without
    --include_path, the task YAMLs that ship with llada (llada/evaluation/tasks: the reasoning tasks
    llada_NAME, the reversal poems) are found from any directory.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(PRESET_HELP)
    runs = preset_argv(argv)
    for i, run in enumerate(runs):
        if len(runs) > 1:
            print(f"llada lm-eval: run {i + 1} of {len(runs)}: lm-eval {' '.join(run)}", file=sys.stderr)
        sys.argv = ["lm-eval", *with_packaged_tasks(run)]
        try:
            cli_evaluate()
        except ValueError as e:  # lm-eval checks the task names before it builds the model
            if not str(e).startswith("Tasks not found"):
                raise
            raise UserError(f"unknown task(s): {str(e).partition(':')[2].strip()}; `lm-eval ls tasks` lists "
                            "them, and --include_path DIR adds your own task YAMLs") from None
    _leave_process_group()


def _leave_process_group() -> None:
    """Under torchrun, wait for every rank and close the process group before the interpreter exits:
    a gloo group left open can abort a rank while Python shuts down ("terminate called without an
    active exception"), failing a run whose results were already written."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def with_packaged_tasks(run: list[str]) -> list[str]:
    """lm-eval arguments `run` with `--include_path` the package's task directory, unless one is given."""
    if any(a == "--include_path" or a.startswith("--include_path=") for a in run):
        return run
    return [*run, "--include_path", str(TASKS_DIR)]


main.parses_own_flags = True  # type: ignore[attr-defined]  (the dispatcher hands it the arguments as given)

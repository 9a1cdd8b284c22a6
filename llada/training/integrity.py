"""Whether a checkpoint, or a model directory, is whole and may be read: cheap checks, made before
anything is built from it (headers, not tensors).

    checkpoint_problem(ckpt)   a checkpoint: its files, trainer/state.json's values, its model directory
    model_dir_problem(root)    a model directory: config.json, weights, every header, the tokenizer

Each returns None, or one line saying what is wrong, which `Checkpoints` turns into a fallback to
the checkpoint before (--resume auto) or one error. A checkpoint is read only within itself: every
entry is a directory or a regular file (a FIFO would block its reader), and a symlink must lead
inside the checkpoint (llada.checkpoint.layout.check_inside).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from safetensors import safe_open

from llada.checkpoint import layout
from llada.checkpoint.tokenizer import load_tokenizer
from llada.config import brief_repr
from llada.training.state import first_line

STEP_DIR = re.compile(r"step-(\d+)")
"""The name of a checkpoint directory, step-N (zero-padded to six digits when written)."""


def step_of(ckpt: Path) -> int | None:
    """N of a checkpoint directory named step-N, or None for any other name ('step-4 (copy)')."""
    found = STEP_DIR.fullmatch(ckpt.name)
    return int(found.group(1)) if found else None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why checkpoint directory `ckpt` cannot be resumed from, or None when it looks whole.

    Its entries are regular files and directories inside it (`entries_problem`); trainer/state.json
    holds a step that is its directory's N, the config it was made with and a CPU thread count
    (`state_problem`); and its model directory is whole (`model_dir_problem`)."""
    problem = entries_problem(ckpt)
    if problem is not None:
        return problem
    try:
        saved = layout.read_json(ckpt / "trainer" / "state.json")
    except Exception as e:  # noqa: BLE001 - a UserError naming the file, or what reading raised
        return f"trainer/state.json: {first_line(e)}"
    problem = state_problem(saved, step_of(ckpt))
    if problem is not None:
        return f"trainer/state.json: {problem}"
    return model_dir_problem(ckpt)


def entries_problem(root: Path) -> str | None:
    """The first entry under `root` that is neither a directory nor a regular file (symlinks
    followed), or whose symlink leads outside `root` or in a loop, said in one line; None when all
    are. Nothing is opened: a FIFO would block."""
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            try:
                if path.is_symlink():
                    layout.check_inside(path, root)
                if not path.is_dir():
                    layout.check_regular(path)
            except Exception as e:  # noqa: BLE001 - ModelDirError; RuntimeError or OSError for a symlink loop
                return f"{path.relative_to(root)}: {first_line(e)}"
    return None


def state_problem(saved: Any, step: int | None) -> str | None:
    """What is wrong with the values of a trainer/state.json, `saved`, of checkpoint step-`step`:
    `step` (an integer, that step), `config` (an object), `threads` (absent, or a positive integer)."""
    if not isinstance(saved, dict):
        return f"expected a JSON object, got {brief_repr(saved)}"
    found = saved.get("step")
    if not _is_int(found) or found < 0 or (step is not None and found != step):
        want = "a step (an integer >= 0)" if step is None else f"this checkpoint's step, {step},"
        return f"`step` is {brief_repr(found)}, where {want} belongs"
    if not isinstance(saved.get("config"), dict):
        return f"`config` is {brief_repr(saved.get('config'))}, not the object of settings the run was made with"
    threads = saved.get("threads")
    if threads is not None and not (_is_int(threads) and threads >= 1):
        return f"`threads` is {brief_repr(threads)}, not a positive number of CPU threads"
    return None


def model_dir_problem(root: Path) -> str | None:
    """Why model directory `root` cannot be loaded, or None when it looks whole: it has its config
    and weights, every torch file is a whole zip archive (its directory is at the end, so a file
    cut short has none), every safetensors header covers its file, every JSON file parses, and the
    tokenizer loads and fits the config. Call `entries_problem` first: files are opened here."""
    if not (root / layout.CONFIG_NAME).is_file() or not any(root.glob("model*.safetensors")):
        return f"no {layout.CONFIG_NAME} or model*.safetensors"
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            _read_header(f)
        except Exception as e:  # noqa: BLE001 - each reader has its own error types
            return f"{f.relative_to(root)} is damaged or cut short: {first_line(e)}"
    try:
        load_tokenizer(root, layout.read_config(root))
    except Exception as e:  # noqa: BLE001 - transformers and tokenizers fail in many ways
        return f"the tokenizer does not load: {first_line(e)}"
    return None


def _read_header(f: Path) -> None:
    """Raise what reading file `f`'s header raises: a torch file's zip directory, a safetensors
    header, a JSON document (other files are not read)."""
    if f.suffix in (".bin", ".pkl", ".pt"):
        with zipfile.ZipFile(f):
            pass
    elif f.suffix == ".safetensors":
        with safe_open(str(f), framework="pt"):
            pass
    elif f.suffix == ".json":
        json.loads(f.read_text())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

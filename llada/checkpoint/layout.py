"""The files of a model directory: their names, how each is read, and the checks that keep reading
inside the directory.

Every file is read through `read_json` / `open_safetensors`, which turn a damaged file (truncated,
not UTF-8, a directory where a file should be) into one `UserError` naming it, not a traceback.

A directory is data, read only within itself: every file it names resolves inside it. A name read
from one of its JSON files (an index's `weight_map`, a tokenizer_config.json `*_file`) is a relative
path without `..`, and a symlink, wherever it is, must lead to a file inside (`check_inside`,
`check_entries`, `named_file`; `push` uploads through the same check) or to a blob of the one
repository the directory is a download of (`hub_blob_repo`): the files of a cache snapshot
(`<cache>/models--org--name/snapshots/<revision>/`) are symlinks to `../../blobs/<hash>` of the
same `models--org--name`, and those of a `--local-dir` download by huggingface_hub before 0.23
link into the blobs of one repository of the Hugging Face cache (HF_HUB_CACHE). A blob folder
elsewhere, or another repository's, is any file of anyone's, and is refused. A symlink loop, and a
FIFO, socket or device where a file belongs, are refused before anything opens them (a FIFO would
block the read).
"""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from llada.config import ConfigError, ModelConfig
from llada.errors import CheckpointError, GenerationError, ModelDirError, UserError
from llada.families import config_from_json
from llada.sampling.options import OPTION_NAMES, SamplerOptions

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
GENERATION_CONFIG_NAME = "generation_config.json"
CARD_NAME = "README.md"
TRAINING_CONFIG_NAME = "training_config.json"  # written by llada.training beside the weights
CONVERSION_NAME = "conversion.json"  # written by `llada convert` beside a causal LM's converted weights
EVAL_RESULTS = "eval/results.json"  # written by `llada eval` (its default --out_dir)
ADAPTER_DIR = "adapter"  # the LoRA adapter of a LoRA run, as peft writes one
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEY_PREFIX = "model."  # the checkpoint's keys are those of the transformers wrapper (llada.hf)


def is_hub_id(text: str) -> bool:
    """A Hub repository id such as GSAI-ML/LLaDA-8B-Instruct (owner/name), not a local path."""
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).expanduser().exists()


# ------------------------------------------------------------------------------ staying inside


def check_inside(path: Path, root: Path) -> Path | None:
    """Refuse `path` (in model directory `root`) when, symlinks followed, it leads out of `root`,
    unless to a blob of the cached repository `root` is a download of (`hub_blob_repo`; that
    repository's folder is returned, else None). A symlink loop is refused too (ModelDirError)."""
    target = real_path(path)
    if target.is_relative_to(real_path(root)):
        return None
    repo = hub_blob_repo(target, root)
    if repo is None:
        raise ModelDirError(f"{path} leads to {target}, outside the model directory {root}; a model directory "
                            "must hold the files it names: copy the file in instead of linking to it")
    return repo


def real_path(path: Path) -> Path:
    """`path` with every symlink followed (`Path.resolve`); a symlink loop is one ModelDirError."""
    try:
        return path.resolve()
    except RuntimeError:  # Python before 3.13: "Symlink loop from ..."
        raise ModelDirError(f"{path} is a symlink loop (it leads back to itself); a model directory holds "
                            "files, or symlinks to files") from None
    except OSError as e:  # 3.13 on: ELOOP as an OSError
        raise ModelDirError(f"{path}: cannot be resolved ({e.strerror or e}); a model directory holds files, or "
                            "symlinks to files (a symlink loop?)") from None


def hub_blob_repo(target: Path, root: Path) -> Path | None:
    """The cached repository folder (`<cache>/models--org--name`) whose blob `target` (a real path)
    is, when model directory `root` may link there, else None. `root` may link into the blobs of
    the repository whose `snapshots/` hold it (a cache snapshot, wherever the cache is: `cache_dir`
    too), or, from outside any cache, into those of a repository of the Hugging Face cache
    (HF_HUB_CACHE: a `--local-dir` download by huggingface_hub before 0.23; `check_entries` sees
    that every link goes to the same one)."""
    repo = target.parent.parent
    if target.parent.name != "blobs" or not repo.name.startswith("models--"):
        return None
    home = real_path(root)
    if home.is_relative_to(repo / "snapshots"):
        return repo
    from huggingface_hub import constants  # on first use: only a symlink out of a directory gets here

    cache = real_path(Path(constants.HF_HUB_CACHE).expanduser())
    return repo if repo.parent == cache and not home.is_relative_to(cache) else None


def check_regular(path: Path, kind: str = "a file") -> None:
    """Refuse `path` unless it is a regular file (symlinks followed), without opening it: a FIFO
    would block whatever opens it, a device might never end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ModelDirError(f"{path}: no such file") from None
    except OSError as e:
        raise ModelDirError(f"{path}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise ModelDirError(f"{path} is a directory; {kind} belongs there")
    if not stat.S_ISREG(mode):
        raise ModelDirError(f"{path} is not a regular file (a FIFO, socket or device); {kind} belongs there")


def check_entries(root: Path) -> None:
    """Refuse a model directory with a symlink leading outside it (`check_inside`; the links of a
    download into the cache all to one repository's blobs), or a FIFO, socket or device among its
    files (those of `additional_chat_templates/` too, which transformers reads). Folders are not
    entered: loading reads none of them but that one."""
    templates = root / "additional_chat_templates"
    repos: set[Path] = set()
    for folder in (root, templates) if templates.is_dir() else (root,):
        for path in folder.iterdir():
            if path.is_symlink() and (repo := check_inside(path, root)) is not None:
                repos.add(repo)
            if path.exists() and not path.is_dir():
                check_regular(path)
    if len(repos) > 1:
        raise ModelDirError(f"{root} links to the cached files of {len(repos)} repositories "
                            f"({', '.join(sorted(r.name for r in repos))}); a download holds one repository's")


def check_model_file(path: Path, root: Path, kind: str = "a file") -> None:
    """Refuse `path` unless it is a regular file whose real path is inside model directory `root`
    (`check_inside`, `check_regular`): what `push` checks of each file before uploading it."""
    check_inside(path, root)
    check_regular(path, kind)


def named_file(root: Path, name: Any, source: str) -> Path:
    """`root / name` for a file name read from a JSON file of model directory `root` (`source` says
    where): a relative path that stays inside, symlinks followed; anything else is one error."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source}: {name!r} is not a file name")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ModelDirError(f"{source} names {name!r}, a path outside the model directory {root}; a model "
                            "directory names only files inside it")
    check_inside(root / name, root)
    return root / name


# ---------------------------------------------------------------------------------- reading files


def read_json(path: Path, error: type[UserError] = CheckpointError) -> Any:
    """A JSON file of a model directory. Whatever keeps it from being read (missing, a directory, a
    FIFO, not UTF-8, not JSON) is one `error` (or ModelDirError) naming the file."""
    check_regular(path, "a JSON file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ModelDirError(f"{path}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x}); the file is damaged, "
                    "or not the JSON file it should be") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # also ints of over 4300 digits, nesting past the stack
        raise error(f"{path}: not valid JSON ({e})") from None


def optional_json(path: Path) -> Any:
    """A JSON file described when present (the model card): None when missing, "unreadable" when damaged."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except UserError:
        return "unreadable"


def read_config(root: Path) -> ModelConfig:
    """config.json of a model directory, validated (errors name the file and the field)."""
    path = root / CONFIG_NAME
    data = read_json(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return config_from_json(data, source=str(path))


def auto_map_modules(config: Any) -> list[str]:
    """The modules a config's `auto_map` names (`module.Class`, or `repo--module.Class` on the Hub)."""
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    entries = auto_map.values() if isinstance(auto_map, dict) else []
    return [name.split("--")[-1].split(".")[0] for entry in entries
            for name in (entry if isinstance(entry, list) else [entry]) if isinstance(name, str)]


@contextmanager
def open_safetensors(path: Path, device: str = "cpu") -> Iterator[Any]:
    """`safe_open`, with a damaged file (truncated, not safetensors, a directory, a FIFO) as one
    CheckpointError (ModelDirError)."""
    check_regular(path, "a safetensors file")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            yield f
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it may be truncated or damaged: "
                              "download or save it again") from None


def weight_files(root: Path) -> dict[str, list[str]]:
    """shard file name -> keys in it, validated against the index when the model is sharded."""
    index = root / INDEX_NAME
    if index.exists():
        weight_map = read_json(index)
        if not isinstance(weight_map, dict) or not isinstance(weight_map.get("weight_map"), dict):
            raise CheckpointError(f"{index}: not a valid safetensors index (no `weight_map` object)")
        weight_map = weight_map["weight_map"]
        files: dict[str, list[str]] = {}
        for key, name in weight_map.items():
            if not isinstance(name, str) or name not in files:
                named_file(root, name, f"{index}: weight_map[{key!r}]")
            files.setdefault(name, []).append(key)
        missing = [n for n in files if not (root / n).exists()]
        if missing:
            raise ModelDirError(f"{index} lists shard(s) that are missing: {', '.join(sorted(missing))}")
        return files
    single = root / WEIGHTS_NAME
    if single.exists():
        with open_safetensors(single) as f:
            return {WEIGHTS_NAME: list(f.keys())}
    others = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    hint = f" (found {', '.join(others)}: re-save them as safetensors)" if others else ""
    raise ModelDirError(f"{root}: no {WEIGHTS_NAME} or {INDEX_NAME}{hint}")


# safetensors' dtype names of the floating-point weights a model may hold
FLOAT_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def stored_dtype(root: Path, files: dict[str, list[str]]) -> torch.dtype:
    """The floating dtype most of a model directory's weights are stored in (by element count;
    float32 when none is), read from the safetensors headers alone. A float8 (or other narrow
    float) tensor is refused with one CheckpointError naming it: such checkpoints are quantized
    with scales kept beside the weights, and cast alone their values would be other weights."""
    counts: dict[torch.dtype, int] = {}
    for file_name, keys in files.items():
        with open_safetensors(root / file_name) as f:
            for key in keys:
                piece = f.get_slice(key)
                name = piece.get_dtype()
                if name in FLOAT_DTYPES:
                    elements = math.prod(piece.get_shape())
                    counts[FLOAT_DTYPES[name]] = counts.get(FLOAT_DTYPES[name], 0) + elements
                elif name.startswith("F"):
                    raise CheckpointError(f"{root / file_name}: {key} holds float8 or narrower values ({name}); "
                                          "llada loads float32, bfloat16 or float16 weights: load the checkpoint "
                                          "this one was quantized from (int8 or int4: --quantization)")
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def read_tensors(path: str | Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """Only `keys` of a model directory's weights (sharded or not), on the CPU."""
    root = Path(path)
    out: dict[str, torch.Tensor] = {}
    for file_name, present in weight_files(root).items():
        wanted = set(keys) & set(present)
        if wanted:
            with open_safetensors(root / file_name) as f:
                out.update({k: f.get_tensor(k) for k in wanted})
    missing = [k for k in keys if k not in out]
    if missing:
        raise CheckpointError(f"{root}: no weight {missing[0]!r} in its safetensors files")
    return out


# ------------------------------------------------------------------------------ generation_config.json
# transformers' names where it has one (max_new_tokens, do_sample and temperature, the token ids),
# every other sampler option under its SamplerOptions name: transformers keeps unknown keys as
# attributes of its GenerationConfig, so `LLaDAModelLM.generate` (llada.hf) reads them there too.


def generation_config(options: SamplerOptions, config: ModelConfig) -> dict[str, Any]:
    """The content of generation_config.json for `options` and the model's token ids."""
    roles = config.roles
    out: dict[str, Any] = {"bos_token_id": roles.bos, "eos_token_id": list(roles.stops), "pad_token_id": roles.pad,
                           "mask_token_id": roles.mask, "max_new_tokens": options.gen_length,
                           "do_sample": options.temperature > 0}
    if options.temperature > 0:
        out["temperature"] = options.temperature
    out.update({k: v for k, v in options.to_dict().items() if k not in ("gen_length", "temperature")})
    return out


def sampler_options(data: dict[str, Any], source: str = GENERATION_CONFIG_NAME) -> SamplerOptions:
    """SamplerOptions from a generation config's keys (`generation_config` inverted; keys it does
    not name keep their defaults, so LLaDA-8B's file, which names only token ids, gives the defaults)."""
    values = {k: data[k] for k in OPTION_NAMES if k in data and k not in ("gen_length", "temperature")}
    if data.get("max_new_tokens") is not None:
        values["gen_length"] = data["max_new_tokens"]
    do_sample = data.get("do_sample")
    if do_sample is not None and not isinstance(do_sample, bool):  # typed: the string "false" is truthy
        raise CheckpointError(f"{source}: do_sample must be true or false, got {do_sample!r}")
    values["temperature"] = (data.get("temperature") or 1.0) if do_sample else 0.0
    try:
        return SamplerOptions().replace(**values)
    except GenerationError as e:
        raise CheckpointError(f"{source}: {e}") from None


def load_sampler_options(root: Path) -> SamplerOptions:
    """The sampler settings a model directory recommends (generation_config.json), or the defaults."""
    path = root / GENERATION_CONFIG_NAME
    if not path.exists():
        return SamplerOptions()
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return sampler_options(data, source=str(path))

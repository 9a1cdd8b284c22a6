"""Model directories in the Hugging Face layout of the public LLaDA checkpoints, both ways.

A model directory holds:
    config.json                      LLaDA field names, `model_type: "llada"`
    model.safetensors                or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json, tokenizer_config.json   chat template inside; opens in transformers 4.46 to 5.x
    generation_config.json           the recommended sampler settings (SamplerOptions) and the token ids
    README.md                        a model card, generated from what the directory holds
    training_config.json, adapter/   written by the trainer: its settings; with LoRA the peft adapter

Keys are `model.transformer.wte.weight`, `model.transformer.blocks.N.{q_proj,...}.weight`, ... —
the `LLaDAModel` parameter names behind a `model.` prefix. Loading builds the model on the meta
device and streams tensors one at a time from the shards into it, so an 8B checkpoint needs its
own size in memory, not twice. A directory of another model family (Dream: its config.json and key
names) loads and saves through that family's entry in `llada.families`, which says how its config
and keys map onto ours; nothing below names a family.

Every file is read through `read_json` / `_safetensors`, which turn a damaged file (truncated, not
UTF-8, a directory where a file should be) into one `UserError` naming it, not a traceback.

A directory is data, read only within itself: every file it names resolves inside it. A name read
from one of its JSON files (an index's `weight_map`, a tokenizer_config.json `*_file`) is a relative
path without `..`, and a symlink, wherever it is, must lead to a file inside (`_check_entries`,
`_named_file`) or to a blob of the Hugging Face cache (`models--org--name/blobs/<hash>`): the
files of a cache snapshot (`models--org--name/snapshots/<revision>/`) are symlinks to
`../../blobs/<hash>`, and so are those of a `--local-dir` download by huggingface_hub before 0.23.
A FIFO, socket or device where a file belongs is refused before anything opens it (a FIFO would
block the read).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from llada.config import PRESETS, ConfigError, ModelConfig
from llada.errors import CheckpointError, GenerationError, ModelDirError, UserError
from llada.families import family_for
from llada.model import LLaDAModel
from llada.sampling.options import OPTION_NAMES, SamplerOptions

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
GENERATION_CONFIG_NAME = "generation_config.json"
CARD_NAME = "README.md"
TRAINING_CONFIG_NAME = "training_config.json"  # written by llada.train beside the weights
EVAL_RESULTS = "eval/results.json"  # written by `llada eval` (its default --out_dir)
ADAPTER_DIR = "adapter"  # the LoRA adapter of a LoRA run, as peft writes one
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEY_PREFIX = "model."  # the checkpoint's keys are those of the transformers wrapper (llada.hf)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass
class Bundle:
    """What `load` returns: the model, its tokenizer, and the config they agree on."""

    model: LLaDAModel
    tokenizer: Any  # transformers.PreTrainedTokenizerFast, or None when loaded without one
    config: ModelConfig
    path: Path | None = None
    options: SamplerOptions = field(default_factory=SamplerOptions)
    """The recommended sampler settings, from generation_config.json (the defaults when it has none)."""

    def save(self, path: str | Path, **kwargs: Any) -> None:
        kwargs.setdefault("options", self.options)
        save(path, self.model, self.tokenizer, **kwargs)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """None keeps the stored dtype; otherwise one of float32, bfloat16, float16."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise CheckpointError(f"unsupported dtype {dtype!r}; choose one of: auto, float32, bfloat16, float16")


def _is_hub_id(text: str) -> bool:
    """A Hub repository id such as GSAI-ML/LLaDA-8B-Instruct (owner/name), not a local path."""
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).expanduser().exists()


def _resolve_dir(path: str | Path, revision: str | None = None) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ModelDirError(f"path must be a model directory or a Hugging Face Hub id (org/name), got {path!r}")
    p = Path(path).expanduser()
    if p.is_dir():
        if revision is not None:
            raise ModelDirError(f"{p} is a local directory; --revision applies to a Hugging Face Hub id")
        _check_entries(p)
        return p
    if p.exists():
        raise ModelDirError(f"{p} is a file; a model directory (with {CONFIG_NAME} and safetensors) is needed")
    text = str(path)
    if _is_hub_id(text):
        # fetch only what we read
        from huggingface_hub import snapshot_download

        try:
            root = Path(snapshot_download(text, revision=revision,
                                          allow_patterns=["*.json", "*.safetensors", "*.jinja", "tokenizer*",
                                                          "*.model", "*.txt"]))
        except Exception as e:  # noqa: BLE001 - network and auth errors vary by hub version
            raise _hub_error(text, revision, e) from None
        _check_entries(root)
        return root
    raise ModelDirError(f"{p}: no such directory (expected a model directory with {CONFIG_NAME})")


def _hub_error(repo: str, revision: str | None, e: Exception) -> ModelDirError:
    at = f" at revision {revision!r}" if revision else ""
    return ModelDirError(f"{repo!r}{at} is not a local directory and could not be fetched from the Hugging Face "
                         f"Hub ({type(e).__name__}: {e})")


def _check_inside(path: Path, root: Path) -> None:
    """Refuse `path` (in model directory `root`) when, symlinks followed, it leads out of `root`,
    unless to a blob of the Hugging Face cache (a model file the Hub's client stored)."""
    target = path.resolve()
    hub_blob = target.parent.name == "blobs" and target.parent.parent.name.startswith("models--")
    if not (target.is_relative_to(root.resolve()) or hub_blob):
        raise ModelDirError(f"{path} leads to {target}, outside the model directory {root}; a model directory "
                            "must hold the files it names: copy the file in instead of linking to it")


def _check_regular(path: Path, kind: str = "a file") -> None:
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


def _check_entries(root: Path) -> None:
    """Refuse a model directory with a symlink leading outside it, or a FIFO, socket or device among
    its files (those of `additional_chat_templates/` too, which transformers reads). Folders are
    not entered: loading reads none of them but that one."""
    templates = root / "additional_chat_templates"
    for folder in (root, templates) if templates.is_dir() else (root,):
        for path in folder.iterdir():
            if path.is_symlink():
                _check_inside(path, root)
            if path.exists() and not path.is_dir():
                _check_regular(path)


def _named_file(root: Path, name: Any, source: str) -> Path:
    """`root / name` for a file name read from a JSON file of model directory `root` (`source` says
    where): a relative path that stays inside, symlinks followed; anything else is one error."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source}: {name!r} is not a file name")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ModelDirError(f"{source} names {name!r}, a path outside the model directory {root}; a model "
                            "directory names only files inside it")
    _check_inside(root / name, root)
    return root / name


def read_json(path: Path, error: type[UserError] = CheckpointError) -> Any:
    """A JSON file of a model directory. Whatever keeps it from being read (missing, a directory, a
    FIFO, not UTF-8, not JSON) is one `error` (or ModelDirError) naming the file."""
    _check_regular(path, "a JSON file")
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


def read_config(root: Path) -> ModelConfig:
    """config.json of a model directory, validated (errors name the file and the field)."""
    path = root / CONFIG_NAME
    data = read_json(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return ModelConfig.from_dict(data, source=str(path))


@contextmanager
def _safetensors(path: Path, device: str = "cpu") -> Iterator[Any]:
    """`safe_open`, with a damaged file (truncated, not safetensors, a directory, a FIFO) as one
    CheckpointError (ModelDirError)."""
    _check_regular(path, "a safetensors file")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            yield f
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it may be truncated or damaged: "
                              "download or save it again") from None


def _weight_files(root: Path) -> dict[str, list[str]]:
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
                _named_file(root, name, f"{index}: weight_map[{key!r}]")
            files.setdefault(name, []).append(key)
        missing = [n for n in files if not (root / n).exists()]
        if missing:
            raise ModelDirError(f"{index} lists shard(s) that are missing: {', '.join(sorted(missing))}")
        return files
    single = root / WEIGHTS_NAME
    if single.exists():
        with _safetensors(single) as f:
            return {WEIGHTS_NAME: list(f.keys())}
    others = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    hint = f" (found {', '.join(others)}: re-save them as safetensors)" if others else ""
    raise ModelDirError(f"{root}: no {WEIGHTS_NAME} or {INDEX_NAME}{hint}")


def load_model(path: str | Path, *, dtype: str | torch.dtype | None = None,
               device: str | torch.device | None = None, revision: str | None = None,
               quantization: str | None = None, device_map: str | dict[str, Any] | None = None,
               max_memory: dict[int | str, int | str] | None = None,
               offload_folder: str | Path | None = None, compile: bool = False) -> LLaDAModel:
    """The model of a model directory, in eval mode, streamed shard by shard onto `device`.

    quantization: None, "int8" or "int4": the block Linear layers quantized weight-only after loading
        (`runtime.quantize`; needs the `quant` extra, torchao).
    device_map: instead of `device`, "auto" or a dict of module name -> GPU index, "cpu" or "disk"
        (`placement.resolve_device_map`); each tensor goes straight to its place and accelerate's
        hooks run the forward across them. max_memory: the budget of "auto" ({0: "80GiB", "cpu":
        "200GiB"}); offload_folder: where "disk" weights are written.
    compile: each block compiled for inference (`runtime.compile_blocks`).
    Raises ModelDirError / CheckpointError for a directory that does not load, and CheckpointError
    for options that do not go together (device_map with device, quantization or compile).
    """
    from llada import runtime

    runtime.check_quantization(quantization)
    if not isinstance(compile, bool):
        raise CheckpointError(f"compile must be true or false, got {compile!r}")
    if device_map is not None and device is not None:
        raise CheckpointError("give device or device_map, not both: a device_map places every module itself")
    if device_map is not None and (quantization is not None or compile):
        raise CheckpointError(f"{'quantization' if quantization is not None else 'compile'} with a device_map is "
                              "not supported yet; give one of them")
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise CheckpointError("max_memory and offload_folder apply with device_map; give device_map='auto' too")
    root = _resolve_dir(path, revision)
    if not (root / CONFIG_NAME).exists():
        raise ModelDirError(f"{root}: no {CONFIG_NAME}; is this a model directory?")
    config = read_config(root)
    want_dtype = resolve_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")

    fam = family_for(config)
    with torch.device("meta"):
        model = fam.build(config)
    files = _weight_files(root)
    placer = None
    if device_map is not None:
        from llada.placement import Placer, resolve_device_map

        placer = Placer(model, resolve_device_map(model, device_map, max_memory,
                                                  want_dtype or _stored_dtype(root, files), offload_folder),
                        offload_folder)
    # quantized layers are moved to `device` one at a time, from the CPU, by runtime.quantize
    stream_to = torch.device("cpu") if quantization is not None or placer is not None else device
    _stream_weights(model, root, files, stream_to, want_dtype, placer)
    model.eval()
    if placer is not None:
        return placer.dispatch(model)
    if quantization is not None:
        runtime.quantize(model, quantization, device)
    return runtime.compile_blocks(model) if compile else model


def _stored_dtype(root: Path, files: dict[str, list[str]]) -> torch.dtype:
    """The dtype of the first floating-point tensor of a model directory."""
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    for file_name, keys in files.items():
        with _safetensors(root / file_name) as f:
            for key in keys:
                if (found := f.get_slice(key).get_dtype()) in dtypes:
                    return dtypes[found]
    return torch.float32


def _stream_weights(model: LLaDAModel, root: Path, files: dict[str, list[str]], device: torch.device,
                    want_dtype: torch.dtype | None, placer: Any = None) -> None:
    """Every tensor of the safetensors files into `model` (on the meta device), renamed by the
    model's family, checked against the shapes the config implies; with a `placement.Placer`,
    each to where the device map puts it."""
    config, fam = model.config, family_for(model.config)
    expected = dict(model.named_parameters())
    expected.update((n, b) for n, b in model.named_buffers()
                    if n.rpartition(".")[2] not in model.get_submodule(n.rpartition(".")[0])._non_persistent_buffers_set)
    seen: set[str] = set()
    for file_name, keys in files.items():
        file_path = root / file_name
        # safetensors names the CPU "cpu" only (accelerate's multi-process CPU device is "cpu:0")
        with _safetensors(file_path, device="cpu" if device.type == "cpu" else str(device)) as f:
            for key in keys:
                pieces = fam.from_checkpoint(key, f.get_tensor(key), config)
                if pieces is None or any(name not in expected for name in pieces):
                    raise CheckpointError(f"{file_path}: unexpected weight {key!r} for this config "
                                          f"(weight_tying={config.weight_tying}, "
                                          f"include_bias={config.include_bias})")
                for name, tensor in pieces.items():
                    _check_piece(file_path, key, tensor, expected[name])
                    if want_dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(want_dtype)
                    tensor = _own_storage(tensor)
                    if placer is not None:
                        tensor = placer.place(name, tensor)
                    if tensor is not None:  # None: written to the offload folder, left on the meta device
                        _set_parameter(model, name, tensor)
                    seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        shown = ", ".join(fam.checkpoint_key(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"{root}: {len(missing)} weight(s) missing from the safetensors files: {shown}")


def _check_piece(file_path: Path, key: str, tensor: torch.Tensor, slot: torch.Tensor) -> None:
    """Refuse a stored tensor that does not fit the parameter (or buffer) `slot` it fills: another
    shape, or integer values where the model holds floating-point ones (they would load, and the
    first forward would fail)."""
    if tuple(tensor.shape) != tuple(slot.shape):
        raise CheckpointError(f"{file_path}: {key} has shape {tuple(tensor.shape)}, but "
                              f"{CONFIG_NAME} implies {tuple(slot.shape)}")
    if slot.is_floating_point() and not tensor.is_floating_point():
        raise CheckpointError(f"{file_path}: {key} holds {str(tensor.dtype).removeprefix('torch.')} values; "
                              "a model's weights are floating-point (float32, bfloat16 or float16)")


_ALIGNMENT = 64  # bytes: what torch's CPU allocator gives every fresh tensor


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, copied into a fresh allocation when it is a view into a larger buffer (a safetensors
    file's bytes, a fused query_key_value split in three) or not aligned as a fresh tensor is. The
    CPU's matrix kernels may take another path for an unaligned operand, so without this the same
    weights loaded two ways (a public fused layout, a re-saved one, an offloaded copy) could give
    logits that differ in the last float32 bits."""
    if tensor.device.type != "cpu":
        return tensor
    shared = tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()
    if shared or tensor.data_ptr() % _ALIGNMENT or not tensor.is_contiguous():
        return tensor.clone(memory_format=torch.contiguous_format)
    return tensor


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put a loaded tensor in place of the (meta) parameter or buffer `name`."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._buffers:  # e.g. an MoE router's expert bias: set by balancing, not trained
        module._buffers[leaf] = tensor
    else:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=tensor.is_floating_point())


def load_tokenizer(path: str | Path, config: ModelConfig | None = None) -> Any:
    """The tokenizer of a model directory, checked against the model config when one is given, and
    its chat template rendered once (`tokenizer.check_chat_template`). A family whose directories
    name remote tokenizer code (Dream) opens with its transformers class."""
    import transformers

    from llada.tokenizer import check_chat_template

    root = Path(path)
    if not any((root / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ModelDirError(f"{root}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    _check_entries(root)
    _check_tokenizer_names(root)
    name = family_for(config).tokenizer_class if config is not None else None
    cls = getattr(transformers, name) if name else transformers.AutoTokenizer
    quiet = transformers.utils.logging.get_verbosity()
    try:
        # AutoTokenizer reads config.json too; a model_type transformers does not know (llada2_moe)
        # makes it warn about a config it then does not use
        transformers.utils.logging.set_verbosity_error()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # and about that config's deprecated keys
            tokenizer = cls.from_pretrained(root)
    except Exception as e:  # noqa: BLE001 - transformers raises many types here
        raise CheckpointError(f"{root}: the tokenizer could not be loaded ({type(e).__name__}: {e})") from None
    finally:
        transformers.utils.logging.set_verbosity(quiet)
    if config is not None:
        check_tokenizer(tokenizer, config, source=str(root))
    check_chat_template(tokenizer, source=str(root))
    return tokenizer


def _check_tokenizer_names(root: Path) -> None:
    """Refuse a tokenizer_config.json whose `*_file` / `*_files` keys name a file outside the
    directory: transformers opens what they name (4.x as written; 5.x its `fast_tokenizer_files`)."""
    path = root / "tokenizer_config.json"
    config = read_json(path) if path.exists() else None
    for key, value in config.items() if isinstance(config, dict) else ():
        if key.endswith(("_file", "_files")) and value is not None:
            for name in value if isinstance(value, list) else [value]:
                _named_file(root, name, f"{path}: `{key}`")


def check_tokenizer(tokenizer: Any, config: ModelConfig, source: str = "tokenizer") -> None:
    """Refuse a tokenizer that produces ids the embedding does not have, or disagrees on special ids."""
    top = max(tokenizer.get_vocab().values()) + 1
    if top > config.embedding_size:
        raise CheckpointError(
            f"{source}: the tokenizer produces ids up to {top - 1} but config.json's `embedding_size` "
            f"is {config.embedding_size}; the vocabulary must fit the embedding")
    if tokenizer.mask_token_id is not None and tokenizer.mask_token_id != config.mask_token_id:
        raise CheckpointError(f"{source}: the tokenizer's mask token id is {tokenizer.mask_token_id} but "
                              f"config.json's `mask_token_id` is {config.mask_token_id}")
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id != config.eos_token_id:
        raise CheckpointError(f"{source}: the tokenizer's EOS id is {tokenizer.eos_token_id} but "
                              f"config.json's `eos_token_id` is {config.eos_token_id}")


def load(path: str | Path, *, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
         tokenizer: bool = True, revision: str | None = None, quantization: str | None = None,
         device_map: str | dict[str, Any] | None = None, max_memory: dict[int | str, int | str] | None = None,
         offload_folder: str | Path | None = None, compile: bool = False) -> Bundle:
    """Open a model directory (ours or a public LLaDA checkpoint, sharded or not, or a Hub id).

    dtype: None/"auto" keeps the stored dtype; "float32", "bfloat16" or "float16" converts.
    device: where the weights are streamed to (default CPU).
    revision: a branch, tag or commit of a Hub id (None: main).
    quantization: None, or "int8" / "int4" weight-only quantization of the blocks' Linear layers
        (torchao, the `quant` extra; int8 tested on the CPU, untested on CUDA; int4 on the CPU only):
        see `runtime.quantize`.
    device_map: instead of `device`, "auto" (blocks balanced over the GPUs of `max_memory`, then the
        CPU, then disk) or a dict of module name -> GPU index, "cpu" or "disk"; blocks are never split
        and `offload_folder` holds the "disk" weights (accelerate's big-model inference, `placement`).
    compile: compile each block for a model that only runs forward (`runtime.compile_blocks`; the
        first calls pay the compilation).
    Errors are ModelDirError / CheckpointError with one line saying what was wrong.
    """
    from llada import runtime

    runtime.check_device(device)  # before anything is read or downloaded
    root = _resolve_dir(path, revision)
    model = load_model(root, dtype=dtype, device=device, quantization=quantization, device_map=device_map,
                       max_memory=max_memory, offload_folder=offload_folder, compile=compile)
    tok = load_tokenizer(root, model.config) if tokenizer else None
    if tok is not None:
        fill_special_ids(model.config, tok)
    return Bundle(model=model, tokenizer=tok, config=model.config, path=root, options=load_sampler_options(root))


def fill_special_ids(config: ModelConfig, tokenizer: Any) -> None:
    """Take BOS and end-of-turn ids the config does not name from the tokenizer (LLaDA-8B's
    config.json names neither; its tokenizer has `<|startoftext|>` and the family's end-of-turn
    token, `<|eot_id|>`)."""
    vocab = tokenizer.get_vocab()
    if config.bos_token_id is None and tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    eot = family_for(config).end_of_turn
    if config.eot_token_id is None and eot in vocab:
        config.eot_token_id = vocab[eot]


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
    values["temperature"] = (data.get("temperature") or 1.0) if data.get("do_sample") else 0.0
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


# --------------------------------------------------------------------------------------------------


def state_dict_for_saving(model: LLaDAModel, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Checkpoint keys -> contiguous CPU tensors, in the key names of the model's family (LLaDA:
    the `model.` prefix of the public checkpoints). A quantized model, or one with weights offloaded
    by a device_map, is refused (CheckpointError): load it plainly to save it."""
    from llada.runtime import is_quantized

    if is_quantized(model) or any(p.is_meta for p in model.parameters()):
        raise CheckpointError("this model is quantized or has offloaded weights and cannot be saved as it is; "
                              "load it without quantization or device_map to save it")
    out = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[name] = t.to("cpu").contiguous()
    return {k: t.contiguous() for k, t in family_for(model.config).to_checkpoint(out).items()}


def save(path: str | Path, model: LLaDAModel, tokenizer: Any = None, *, max_shard_size: int | str = "5GB",
         dtype: str | torch.dtype | None = None, options: SamplerOptions | None = None,
         push_to_hub: str | None = None) -> None:
    """Write a model directory into `path`: config.json, safetensors (sharded past max_shard_size),
    the tokenizer, generation_config.json (`options`, default: SamplerOptions' defaults) and a
    model card, in the layout of the model's family. A LLaDA directory opens here, in
    `transformers.AutoModel` (after `import llada`), and in the reference modeling code with
    `trust_remote_code=True`; a Dream directory here and in Dream's own code. `push_to_hub="user/name"`
    then uploads it (`push`)."""
    want = resolve_dtype(dtype)
    if push_to_hub:
        check_repo_id(push_to_hub)  # before anything is written
    save_state_dict(path, state_dict_for_saving(model, want), model.config, tokenizer,
                    max_shard_size=max_shard_size, options=options)
    if push_to_hub:
        push(str(path), push_to_hub)


def save_state_dict(path: str | Path, state: dict[str, torch.Tensor], config: ModelConfig, tokenizer: Any = None,
                    *, max_shard_size: int | str = "5GB", options: SamplerOptions | None = None) -> None:
    """`save` for a state dict already in checkpoint keys (e.g. gathered from FSDP ranks). Files the
    caller wrote into `path` first (training_config.json, adapter/) are described in the model card."""
    from huggingface_hub import split_torch_state_dict_into_shards

    from llada.tokenizer import save_tokenizer

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        check_tokenizer(tokenizer, config, source="tokenizer")
    stored_dtype = next(iter(state.values())).dtype
    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size,
                                               filename_pattern="model{suffix}.safetensors")
    for stale in list(root.glob("model*.safetensors")) + [root / INDEX_NAME]:
        if stale.exists() and stale.name not in split.filename_to_tensors:
            stale.unlink()
    for file_name, keys in split.filename_to_tensors.items():
        save_safetensors({k: state[k].contiguous() for k in keys}, root / file_name)
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": split.tensor_to_filename}
        (root / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    fam = family_for(config)
    cfg = fam.config_to_json(config)
    cfg["torch_dtype"] = str(stored_dtype).removeprefix("torch.")
    cfg["auto_map"] = dict(fam.auto_map)
    (root / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if options is None:  # the family's recommended decoding, else the defaults
        preset = fam.sampler_preset
        options = SamplerOptions.from_dict({"preset": preset}) if preset else SamplerOptions()
    gen = generation_config(options, config)
    (root / GENERATION_CONFIG_NAME).write_text(json.dumps(gen, indent=2) + "\n")
    if tokenizer is not None:
        save_tokenizer(tokenizer, root, model_max_length=config.max_sequence_length)
        _drop_unshipped_tokenizer_code(root)
    write_model_card(root)
    fsync_tree(root)


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write `tensors` as the safetensors file `path`, its mode set by the user's umask like every
    other file of the directory (safetensors itself creates its files readable by the owner only)."""
    save_file(tensors, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask, read without changing it where the system shows it (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore, the one portable way to read it
    os.umask(mask)
    return mask


def _drop_unshipped_tokenizer_code(root: Path) -> None:
    """Remove a tokenizer_config.json `auto_map` naming modules the directory does not hold (Dream's
    tokenizer names its remote `tokenization_dream.py`; ours was opened, and is saved, as its
    transformers class, which `tokenizer_class` names): left in, it would ask for remote code that
    is not there."""
    path = root / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    modules = _auto_map_modules(config)
    if modules and not all((root / f"{m}.py").is_file() for m in modules):
        del config["auto_map"]
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def fsync_tree(root: Path) -> None:
    """Flush every file and directory entry below `root`, so a crash right after leaves whole files."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------------ LoRA adapter
# The adapter of a LoRA run, as peft lays one out, for the base model opened in transformers
# (`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dir)`, after `import llada`):
# that model holds the LLaDAModel as `.model` (llada.hf), so the keys gain its `model.` as the
# weights of a model directory do.
_PEFT_PREFIX = "base_model.model."


def save_lora_adapter(module: nn.Module, path: str | Path, base: str,
                      state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the LoRA adapters of `module` (a peft-wrapped LLaDAModel, compiled or not) into `path`:
    adapter_config.json (naming `base`, the model it adapts) and adapter_model.safetensors.
    `state`: the module's whole state dict when its own parameters are not (FSDP shards: the one
    accelerate's `get_state_dict` gathered); default `module.state_dict()`."""
    from peft import get_peft_model_state_dict

    peft_model = getattr(module, "_orig_mod", module)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(peft_model, state_dict=state)
    state = {_PEFT_PREFIX + KEY_PREFIX + k.removeprefix(_PEFT_PREFIX): v.detach().cpu().contiguous()
             for k, v in state.items()}
    save_safetensors(state, out / ADAPTER_WEIGHTS)
    config = copy.copy(peft_model.peft_config["default"])
    local = Path(base).expanduser()
    config.base_model_name_or_path = str(local.resolve()) if local.is_dir() else base
    config.inference_mode = True
    config.save_pretrained(str(out))


def load_lora_adapter(module: nn.Module, path: str | Path) -> None:
    """Copy the adapters of a directory written by `save_lora_adapter` into `module`, a peft-wrapped
    LLaDAModel with the same LoRA settings (a resumed run); every adapter weight must be there."""
    from peft import set_peft_model_state_dict

    peft_model = getattr(module, "_orig_mod", module)
    file = Path(path) / ADAPTER_WEIGHTS
    if not file.is_file():
        raise ModelDirError(f"{file}: no such file (a checkpoint of a LoRA run keeps its adapters there)")
    with _safetensors(file) as f:
        state = {_PEFT_PREFIX + k.removeprefix(_PEFT_PREFIX + KEY_PREFIX): f.get_tensor(k) for k in f.keys()}
    result = set_peft_model_state_dict(peft_model, state)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    missing = sorted(trainable & set(result.missing_keys))
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise CheckpointError(f"{file}: its adapters do not fit this model ({len(missing)} missing, "
                              f"{len(result.unexpected_keys)} unexpected, e.g. {first!r}); it was not written "
                              "with this run's settings")


def read_tensors(path: str | Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """Only `keys` of a model directory's weights (sharded or not), on the CPU."""
    root = Path(path)
    out: dict[str, torch.Tensor] = {}
    for file_name, present in _weight_files(root).items():
        wanted = set(keys) & set(present)
        if wanted:
            with _safetensors(root / file_name) as f:
                out.update({k: f.get_tensor(k) for k in wanted})
    missing = [k for k in keys if k not in out]
    if missing:
        raise CheckpointError(f"{root}: no weight {missing[0]!r} in its safetensors files")
    return out


# -------------------------------------------------------------------------------------------- model card
# README.md of a model directory, written from its own files only (so `push` can rewrite it for
# the repository, with an evaluation run since): what the model is, how it was trained, how it
# scored, its special tokens, and how to open and sample it. A card without the marker line is
# someone's own and is never overwritten.
CARD_MARKER = "<!-- model card generated by llada"


def write_model_card(root: Path, name: str | None = None) -> None:
    """Write README.md into model directory `root` (unless it holds a card written by hand); `name`
    is how the usage examples refer to it (default: the path)."""
    path = root / CARD_NAME
    if not _own_card(path):
        path.write_text(model_card(root, name or str(root)), encoding="utf-8")


def _own_card(path: Path) -> bool:
    """Whether README.md `path` is a card written by hand (no marker line), which is never replaced."""
    return path.is_file() and CARD_MARKER not in path.read_text(encoding="utf-8", errors="replace")


def _card_text(root: Path, name: str) -> str:
    """The card `push` uploads: the one written by hand as it is, else one generated naming `name`."""
    path = root / CARD_NAME
    return path.read_text(encoding="utf-8", errors="replace") if _own_card(path) else model_card(root, name)


def _optional_json(path: Path) -> Any:
    """A JSON file the card describes when present: None when missing or unreadable (the card says so)."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except UserError:
        return "unreadable"


def model_card(root: Path, name: str) -> str:
    """The model card of model directory `root` as Markdown."""
    from llada import __version__

    config = read_config(root)
    training = _optional_json(root / TRAINING_CONFIG_NAME)
    tags = ["llada", "masked-diffusion" if config.kind == "diffusion" else "autoregressive-baseline"]
    front = ["---", "pipeline_tag: text-generation", "tags:"] + [f"- {t}" for t in tags]
    if isinstance(training, dict) and _is_hub_id(str(training.get("model", ""))):
        front.append(f"base_model: {training['model']}")
    front.append("---")
    what = ("A masked diffusion language model in the style of LLaDA (Nie et al., 2025): a bidirectional "
            "Transformer that writes an answer by unmasking it step by step."
            if config.kind == "diffusion" else
            "An autoregressive baseline for LLaDA-style models: the same Transformer with a causal mask, "
            "trained to predict the next token.")
    sections = [*front, f"{CARD_MARKER} {__version__} from the files of this directory; `llada push` rewrites "
                "it. Delete this line to keep your own edits. -->", "", f"# {Path(name).name or name}", "", what,
                "", *_card_model(root, config), *_card_training(root, training), *_card_evaluation(root),
                *_card_tokenizer(root, config), *_card_usage(root, name, config)]
    return "\n".join(sections).rstrip() + "\n"


def _card_model(root: Path, config: ModelConfig) -> list[str]:
    try:
        files = list(_weight_files(root))
    except UserError:
        files = []
    dtype = config.extra.get("torch_dtype") or config.extra.get("dtype") or "dtype not recorded"
    return ["## Model", "", "| | |", "|---|---|",
            f"| parameters | {_millions(config.num_params())} ({_millions(config.num_params(embeddings=False))} "
            "without embeddings) |",
            f"| layers, width | {config.n_layers} x {config.d_model}, {config.n_heads} heads "
            f"({config.n_kv_heads} key/value), MLP {config.mlp_hidden_size} |",
            *([f"| mixture of experts | {config.moe.describe()}; "
               f"{_millions(config.num_params(active=True))} parameters active per token |"] if config.moe else []),
            f"| vocabulary | {config.vocab_size} tokens ({config.embedding_size} embedding rows) |",
            f"| context | {config.max_sequence_length} tokens |",
            f"| weights | {dtype}, {', '.join(files) or 'missing'} |", ""]


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n >= 1e5 else f"{n:,}"


def _card_training(root: Path, training: Any) -> list[str]:
    head = ["## Training", ""]
    if training is None:
        return head + [f"This directory has no {TRAINING_CONFIG_NAME}: how its weights were trained is not "
                       "recorded here.", ""]
    if not isinstance(training, dict):
        return head + [f"{TRAINING_CONFIG_NAME} could not be read.", ""]
    t = training
    stage = {"pretrain": "pretraining (the masked diffusion loss, Eq. 3)",
             "sft": "supervised fine-tuning on chat conversations (Eq. 5: the loss on response tokens only)"}
    stage_text = stage.get(t.get("stage"), str(t.get("stage")))
    if t.get("objective") == "ar":
        stage_text = f"{t.get('stage')} with the next-token loss (the autoregressive baseline)"
    model = str(t.get("model"))
    start = (f"a fresh `{model}` shape, weights drawn from seed {t.get('seed')}, with a byte-level BPE of "
             f"{t.get('vocab_size')} tokens trained on the same data" if model in PRESETS else f"`{model}`")
    if t.get("data") is None:
        world = ", ".join(f"{k}={v}" for k, v in (t.get("world") or {}).items())
        data = f"the built-in synthetic world of llada.data.world (seed {t.get('seed')}; {world})"
    else:
        data = f"`{t['data']}`"
    lines = head + [f"Read from {TRAINING_CONFIG_NAME}, which the llada trainer wrote.", "",
                    f"- **Stage**: {stage_text}", f"- **Started from**: {start}", f"- **Data**: {data}",
                    f"- **Steps**: {t.get('max_steps')} optimizer steps of {t.get('batch_size')} sequences x "
                    f"{t.get('grad_accum')} accumulation per process, {t.get('seq_len')} tokens each",
                    f"- **Optimizer**: AdamW, learning rate {t.get('lr')} (warm-up {t.get('warmup_steps')} steps, "
                    f"cosine to {t.get('min_lr_ratio')} x), weight decay {t.get('weight_decay')}, "
                    f"seed {t.get('seed')}"]
    if t.get("lora_r"):
        adapter = (f"; the adapter alone is in `{ADAPTER_DIR}/` (peft)" if (root / ADAPTER_DIR).is_dir() else "")
        lines.append(f"- **LoRA**: rank {t['lora_r']} adapters on every block's linear layers, merged into these "
                     f"weights{adapter}")
    return lines + [""]


def _card_evaluation(root: Path) -> list[str]:
    head = ["## Evaluation", ""]
    results = _optional_json(root / EVAL_RESULTS)
    if not isinstance(results, dict):
        return head + [f"No evaluation is recorded in this directory (`llada eval --model DIR` writes "
                       f"{EVAL_RESULTS}).", ""]
    lines = head + [f"From {EVAL_RESULTS} (`llada eval`, the built-in tasks):", "",
                    "| model | task | items | generation accuracy | choice accuracy | sampler |",
                    "|---|---|---|---|---|---|"]
    for r in results.get("tasks", []):
        choice = r.get("choice_accuracy")
        setting = ", ".join(f"{k}={v}" for k, v in (r.get("setting") or {}).items())
        lines.append(f"| {r.get('kind')} | {r.get('task')} | {r.get('n')} | {r.get('generation_accuracy', 0):.3f} | "
                     f"{'' if choice is None else f'{choice:.3f}'} | {setting} |")
    for kind, lk in (results.get("likelihood") or {}).items():
        bound = "=" if lk.get("exact") else "<="
        lines.append(f"\nHeld-out negative log-likelihood ({kind}): {bound} {lk.get('nll_per_token', 0):.3f} "
                     "nats per token.")
    return lines + [""]


def _card_tokenizer(root: Path, config: ModelConfig) -> list[str]:
    tokenizer_json = _optional_json(root / "tokenizer.json")
    tokenizer_config = _optional_json(root / "tokenizer_config.json")
    if not isinstance(tokenizer_config, dict):
        return ["## Tokenizer", "", "This directory has no readable tokenizer.", ""]
    roles = config.roles
    text = _token_texts(tokenizer_json, {roles.mask, roles.eos, roles.pad, roles.bos, roles.eot})
    lines = ["## Tokenizer", "", "| role | token | id |", "|---|---|---|"]
    for role, token_id in (("mask", roles.mask), ("end of text", roles.eos), ("padding", roles.pad),
                           ("beginning of text", roles.bos), ("end of turn", roles.eot)):
        if token_id is not None:
            lines.append(f"| {role} | `{text.get(token_id, '?')}` | {token_id} |")
    chat = "a chat template" if tokenizer_config.get("chat_template") else "no chat template"
    return lines + ["", f"It has {chat}, pads on the {tokenizer_config.get('padding_side', 'right')} and allows "
                    f"{tokenizer_config.get('model_max_length')} tokens.", ""]


def _token_texts(tokenizer_json: Any, ids: set[int | None]) -> dict[int, str]:
    """The text of token `ids` in a tokenizer.json: its added tokens, else its model's vocabulary."""
    if not isinstance(tokenizer_json, dict):
        return {}
    found = {t["id"]: t.get("content") for t in tokenizer_json.get("added_tokens") or []
             if isinstance(t, dict) and t.get("id") in ids}
    vocab = (tokenizer_json.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        found.update({i: token for token, i in vocab.items() if i in ids and i not in found})
    return found


def _card_usage(root: Path, name: str, config: ModelConfig) -> list[str]:
    options = load_sampler_options(root)
    chat = isinstance(tc := _optional_json(root / "tokenizer_config.json"), dict) and bool(tc.get("chat_template"))
    settings = ", ".join(f"{k}={v!r}" for k, v in options.to_dict().items())
    quoted = json.dumps(name)
    prompt = ('tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True,\n'
              '                                       return_tensors="pt", return_dict=True)' if chat else
              'tokenizer("Hello", return_tensors="pt")')
    return ["## Use", "", f"The recommended sampler settings, in {GENERATION_CONFIG_NAME}: {settings}.", "",
            "With llada:", "", "```python", "import llada",
            "from llada.sampling import sample_text", "", f"bundle = llada.load({quoted})",
            f'print(sample_text(bundle.model, bundle.tokenizer, "Hello", bundle.options, chat={chat}))', "```", "",
            "With transformers (`import llada` registers the model type with its Auto classes):", "",
            "```python", "import llada  # noqa: F401", "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "", f"model = AutoModelForCausalLM.from_pretrained({quoted})",
            f"tokenizer = AutoTokenizer.from_pretrained({quoted})", f"inputs = {prompt}",
            "out = model.generate(**inputs, max_new_tokens=32, steps=32)  # any sampler option by name",
            'print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
            "```", "", f'or `pipeline("text-generation", model={quoted})("Hello", max_new_tokens=32)`.', ""]


# -------------------------------------------------------------------------------------------------- CLI


def info(model: str, revision: str | None = None) -> None:
    """Print a model directory's config, parameter count, dtype and files. For a Hub id only its
    config.json is downloaded.

    Args:
        model: a model directory (or Hub id)
        revision: a branch, tag or commit of a Hub id (default: main)
    """
    if _is_hub_id(str(model)):
        config = _hub_config(str(model), revision)
        label = f"{model}" + (f" (revision {revision})" if revision else "")
        stored = config.extra.get("torch_dtype") or config.extra.get("dtype") or "unknown"
        where = f"stored dtype    {stored} (from config.json; the weights were not downloaded)"
    else:
        root = _resolve_dir(model, revision)
        config = read_config(root)
        files = _weight_files(root)
        with _safetensors(root / next(iter(files))) as f:
            dtype = f.get_slice(next(iter(f.keys()))).get_dtype()
        label, where = f"{root}", f"stored dtype    {dtype}   files: {', '.join(files)}"
    print(label)
    print(f"  family          {config.family}")
    print(f"  parameters      {_millions(config.num_params())} "
          f"({_millions(config.num_params(embeddings=False))} without embeddings"
          + (f"; {_millions(config.num_params(active=True))} active per token)" if config.moe else ")"))
    print(f"  {where}")
    print(f"  shape           d_model={config.d_model} n_layers={config.n_layers} n_heads={config.n_heads} "
          f"n_kv_heads={config.n_kv_heads} mlp={config.mlp_hidden_size} vocab={config.vocab_size}")
    if config.moe:
        print(f"  experts         {config.moe.describe()}")
    print(f"  special ids     mask={config.mask_token_id} eos={config.eos_token_id} "
          f"bos={config.bos_token_id} eot={config.eot_token_id}")


def _hub_config(repo: str, revision: str | None) -> ModelConfig:
    """config.json of a Hub repository, downloaded alone."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(repo, CONFIG_NAME, revision=revision))
    except Exception as e:  # noqa: BLE001 - network and auth errors vary by hub version
        raise _hub_error(repo, revision, e) from None
    return read_config(path.parent)


def convert(model: str, out: str, dtype: str = "auto", max_shard_size: str = "5GB",
            revision: str | None = None) -> None:
    """Re-save a model directory in our layout, optionally in another dtype or shard size.

    Args:
        model: source model directory (ours, a public LLaDA checkpoint, or a Hub id)
        out: destination directory
        dtype: auto (keep), float32, bfloat16 or float16
        max_shard_size: largest safetensors file, e.g. 5GB or 500MB
        revision: a branch, tag or commit when model is a Hub id (default: main)
    """
    bundle = load(model, dtype=dtype, revision=revision)
    if bundle.path is not None and (bundle.path / TRAINING_CONFIG_NAME).is_file():  # the card describes the run
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / TRAINING_CONFIG_NAME).write_bytes((bundle.path / TRAINING_CONFIG_NAME).read_bytes())
    bundle.save(out, max_shard_size=max_shard_size)
    print(f"wrote {out}")


def push(model: str, repo: str, revision: str | None = None, private: bool = False,
         message: str | None = None) -> None:
    """Upload a model directory to the Hugging Face Hub (creating the repository if needed) in one
    commit: its weights, config.json, generation_config.json, tokenizer files, LoRA adapter and
    the records its model card cites (`upload_files`), nothing else; the uploaded card names the
    repository, and the directory itself is left as it is. Log in first (`hf auth login` or the
    HF_TOKEN environment variable).

    Args:
        model: the model directory
        repo: the Hub repository id, e.g. your-name/llada-tiny
        revision: the branch to push to, created if missing (default: main)
        private: create the repository private (an existing one keeps its visibility)
        message: the commit message
    """
    import huggingface_hub
    from huggingface_hub import CommitOperationAdd

    check_repo_id(repo)
    root = Path(model).expanduser()
    if not root.is_dir():
        raise ModelDirError(f"{model}: no such directory; `llada push` uploads a local model directory")
    if not (root / CONFIG_NAME).exists():
        raise ModelDirError(f"{root}: no {CONFIG_NAME}; `llada push` uploads a model directory")
    read_config(root)  # refuse to upload a directory that would not open
    files = upload_files(root)
    card = _card_text(root, repo).encode("utf-8")
    if huggingface_hub.get_token() is None:
        raise UserError("not logged in to the Hugging Face Hub: log in with `hf auth login` or set HF_TOKEN "
                        "to a token that may write, then push again")
    try:
        operations = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(root / n)) for n in files]
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card))
        api = huggingface_hub.HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo, branch=revision, exist_ok=True)
        api.create_commit(repo, operations, commit_message=message or f"Upload {root.name} (llada)",
                          revision=revision)
    except Exception as e:  # noqa: BLE001 - network, auth and permission errors vary by hub version
        raise _push_error(root, repo, e) from None
    print(f"pushed {root} to {repo}" + (f" (branch {revision})" if revision else ""))


def check_repo_id(repo: str) -> None:
    """A UserError unless `repo` is a Hub repository id (`owner/name` or `name`)."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except ValueError:  # HFValidationError
        raise UserError(f"{repo!r} is not a Hugging Face Hub repository id: use owner/name, each part letters, "
                        "digits, '-', '_' and '.' (not first or last), at most 96 characters") from None


# What `push` uploads of a model directory besides its safetensors: the files a model is opened
# from, and the records its card cites. Pickles, optimizer state, notes and the like stay home.
UPLOADED = (CONFIG_NAME, GENERATION_CONFIG_NAME, INDEX_NAME, TRAINING_CONFIG_NAME, EVAL_RESULTS,
            "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
            "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
            f"{ADAPTER_DIR}/adapter_config.json", f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}")


def upload_files(root: Path) -> list[str]:
    """The files of model directory `root` that `push` uploads (its README.md is generated apart):
    the safetensors its index names (or model.safetensors), the `UPLOADED` files it has, and the
    Python modules its `auto_map` names that it holds (a checkpoint with its own modeling code)."""
    names = [*_weight_files(root), *(n for n in UPLOADED if (root / n).is_file())]
    for config in (CONFIG_NAME, "tokenizer_config.json"):
        names += [f"{m}.py" for m in _auto_map_modules(_optional_json(root / config)) if (root / f"{m}.py").is_file()]
    return sorted(set(names))


def _auto_map_modules(config: Any) -> list[str]:
    """The modules a config's `auto_map` names (`module.Class`, or `repo--module.Class` on the Hub)."""
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    entries = auto_map.values() if isinstance(auto_map, dict) else []
    return [name.split("--")[-1].split(".")[0] for entry in entries
            for name in (entry if isinstance(entry, list) else [entry]) if isinstance(name, str)]


def _push_error(root: Path, repo: str, e: Exception) -> UserError:
    """What stopped an upload, in one line: the token refused, no permission, the Hub out of reach, or else."""
    where = f"could not push {root} to {repo!r}"
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None) if response is not None else None
    reason = (str(e).strip().splitlines() or [""])[0]
    if status == 401:
        return UserError(f"{where}: the Hugging Face Hub refused the token (401 Unauthorized); log in again with "
                         "`hf auth login` or set HF_TOKEN to a valid token")
    if status == 403:
        return UserError(f"{where}: this token may not write to {repo!r} (403 Forbidden); push to a repository "
                         "of your own or of an organisation you may write to, with a write token")
    if status is None and _unreachable(e):
        return UserError(f"{where}: cannot reach the Hugging Face Hub ({type(e).__name__}: {reason}); check the "
                         "network connection and that HF_HUB_OFFLINE is not set, then push again")
    return UserError(f"{where} ({type(e).__name__}{f' {status}' if status else ''}: {reason})")


def _unreachable(e: Exception) -> bool:
    """A network failure (offline mode, refused, no route, timed out) in the HTTP client of any
    huggingface_hub version (requests, httpx)."""
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, (OSError, TimeoutError)) or bool(names & {"TransportError", "Timeout", "ConnectionError"})

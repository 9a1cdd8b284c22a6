"""Model directories in the Hugging Face layout of the public LLaDA checkpoints, both ways.

A model directory holds:
    config.json                      LLaDA field names, `model_type: "llada"`
    model.safetensors                or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json, tokenizer_config.json (+ chat template), special_tokens_map.json

Keys are `model.transformer.wte.weight`, `model.transformer.blocks.N.{q_proj,...}.weight`, ... —
the `LLaDAModel` parameter names behind a `model.` prefix. Loading builds the model on the meta
device and streams tensors one at a time from the shards into it, so an 8B checkpoint needs its
own size in memory, not twice.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from llada.config import ConfigError, ModelConfig
from llada.errors import CheckpointError, ModelDirError
from llada.model import LLaDAModel

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
KEY_PREFIX = "model."  # the checkpoint's keys are those of the transformers wrapper (llada.hf)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
# Where the reference modeling code lives, for `trust_remote_code` users of our directories.
REFERENCE_CODE_REPO = "GSAI-ML/LLaDA-8B-Base"


@dataclass
class Bundle:
    """What `load` returns: the model, its tokenizer, and the config they agree on."""

    model: LLaDAModel
    tokenizer: Any  # transformers.PreTrainedTokenizerFast, or None when loaded without one
    config: ModelConfig
    path: Path | None = None

    def save(self, path: str | Path, **kwargs: Any) -> None:
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


def _resolve_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise ModelDirError(f"{p} is a file; a model directory (with {CONFIG_NAME} and safetensors) is needed")
    text = str(path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        # A Hub repository id such as GSAI-ML/LLaDA-8B-Instruct: fetch only what we read.
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.jinja",
                                                                 "tokenizer*", "*.model", "*.txt"]))
        except Exception as e:  # noqa: BLE001 - network and auth errors vary by hub version
            raise ModelDirError(f"{text!r} is not a local directory and could not be fetched from "
                                f"the Hugging Face Hub ({type(e).__name__}: {e})") from None
    raise ModelDirError(f"{p}: no such directory (expected a model directory with {CONFIG_NAME})")


def _weight_files(root: Path) -> dict[str, list[str]]:
    """shard file name -> keys in it, validated against the index when the model is sharded."""
    index = root / INDEX_NAME
    if index.exists():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files: dict[str, list[str]] = {}
        for key, name in weight_map.items():
            files.setdefault(name, []).append(key)
        missing = [n for n in files if not (root / n).exists()]
        if missing:
            raise ModelDirError(f"{index} lists shard(s) that are missing: {', '.join(sorted(missing))}")
        return files
    single = root / WEIGHTS_NAME
    if single.exists():
        with safe_open(single, framework="pt") as f:
            return {WEIGHTS_NAME: list(f.keys())}
    others = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    hint = f" (found {', '.join(others)}: re-save them as safetensors)" if others else ""
    raise ModelDirError(f"{root}: no {WEIGHTS_NAME} or {INDEX_NAME}{hint}")


def load_model(path: str | Path, *, dtype: str | torch.dtype | None = None,
               device: str | torch.device | None = None) -> LLaDAModel:
    """The model of a model directory, in eval mode, streamed shard by shard onto `device`."""
    root = _resolve_dir(path)
    if not (root / CONFIG_NAME).exists():
        raise ModelDirError(f"{root}: no {CONFIG_NAME}; is this a model directory?")
    config = ModelConfig.from_file(root / CONFIG_NAME)
    want_dtype = resolve_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")

    with torch.device("meta"):
        model = LLaDAModel(config)
    expected = dict(model.named_parameters())
    seen: set[str] = set()
    for file_name, keys in _weight_files(root).items():
        file_path = root / file_name
        # safetensors names the CPU "cpu" only (accelerate's multi-process CPU device is "cpu:0")
        with safe_open(file_path, framework="pt", device="cpu" if device.type == "cpu" else str(device)) as f:
            for key in keys:
                name = key[len(KEY_PREFIX):] if key.startswith(KEY_PREFIX) else key
                if name not in expected:
                    raise CheckpointError(f"{file_path}: unexpected weight {key!r} for this config "
                                          f"(weight_tying={config.weight_tying}, "
                                          f"include_bias={config.include_bias})")
                tensor = f.get_tensor(key)
                if tuple(tensor.shape) != tuple(expected[name].shape):
                    raise CheckpointError(f"{file_path}: {key} has shape {tuple(tensor.shape)}, but "
                                          f"{CONFIG_NAME} implies {tuple(expected[name].shape)}")
                if want_dtype is not None:
                    tensor = tensor.to(want_dtype)
                _set_parameter(model, name, tensor)
                seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        shown = ", ".join(KEY_PREFIX + m for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"{root}: {len(missing)} weight(s) missing from the safetensors files: {shown}")
    return model.eval()


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[leaf] = nn.Parameter(tensor, requires_grad=tensor.is_floating_point())


def load_tokenizer(path: str | Path, config: ModelConfig | None = None) -> Any:
    """The tokenizer of a model directory, checked against the model config when one is given."""
    from transformers import AutoTokenizer

    root = Path(path)
    if not any((root / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ModelDirError(f"{root}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(root)
    except Exception as e:  # noqa: BLE001 - transformers raises many types here
        raise CheckpointError(f"{root}: the tokenizer could not be loaded ({type(e).__name__}: {e})") from None
    if config is not None:
        check_tokenizer(tokenizer, config, source=str(root))
    return tokenizer


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
         tokenizer: bool = True) -> Bundle:
    """Open a model directory (ours or a public LLaDA checkpoint, sharded or not, or a Hub id).

    dtype: None/"auto" keeps the stored dtype; "float32", "bfloat16" or "float16" converts.
    device: where the weights are streamed to (default CPU).
    """
    root = _resolve_dir(path)
    model = load_model(root, dtype=dtype, device=device)
    tok = load_tokenizer(root, model.config) if tokenizer else None
    if tok is not None:
        fill_special_ids(model.config, tok)
    return Bundle(model=model, tokenizer=tok, config=model.config, path=root)


def fill_special_ids(config: ModelConfig, tokenizer: Any) -> None:
    """Take BOS and end-of-turn ids the config does not name from the tokenizer (LLaDA-8B's
    config.json names neither; its tokenizer has `<|startoftext|>` and `<|eot_id|>`)."""
    vocab = tokenizer.get_vocab()
    if config.bos_token_id is None and tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    if config.eot_token_id is None and "<|eot_id|>" in vocab:
        config.eot_token_id = vocab["<|eot_id|>"]


# --------------------------------------------------------------------------------------------------


def state_dict_for_saving(model: LLaDAModel, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Checkpoint keys -> contiguous CPU tensors (the `model.` prefix of the public checkpoints)."""
    out = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[KEY_PREFIX + name] = t.to("cpu").contiguous()
    return out


def save(path: str | Path, model: LLaDAModel, tokenizer: Any = None, *, max_shard_size: int | str = "5GB",
         dtype: str | torch.dtype | None = None) -> None:
    """Write a model directory into `path`: config.json, safetensors (sharded past max_shard_size),
    and the tokenizer. It opens here, in `transformers.AutoModel` (after `import llada`), and in the
    reference modeling code with `trust_remote_code=True`."""
    want = resolve_dtype(dtype)
    save_state_dict(path, state_dict_for_saving(model, want), model.config, tokenizer,
                    max_shard_size=max_shard_size)


def save_state_dict(path: str | Path, state: dict[str, torch.Tensor], config: ModelConfig, tokenizer: Any = None,
                    *, max_shard_size: int | str = "5GB") -> None:
    """`save` for a state dict already in checkpoint keys (e.g. gathered from FSDP ranks)."""
    from huggingface_hub import split_torch_state_dict_into_shards

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
        save_file({k: state[k].contiguous() for k in keys}, str(root / file_name), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": split.tensor_to_filename}
        (root / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    cfg = config.to_dict()
    cfg["torch_dtype"] = str(stored_dtype).removeprefix("torch.")
    cfg["auto_map"] = {
        "AutoConfig": f"{REFERENCE_CODE_REPO}--configuration_llada.LLaDAConfig",
        "AutoModel": f"{REFERENCE_CODE_REPO}--modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": f"{REFERENCE_CODE_REPO}--modeling_llada.LLaDAModelLM",
    }
    (root / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(root)
    fsync_tree(root)


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


# -------------------------------------------------------------------------------------------------- CLI


def info(model: str) -> None:
    """Print a model directory's config, parameter count, dtype and files.

    Args:
        model: a model directory (or Hub id)
    """
    root = _resolve_dir(model)
    try:
        config = ModelConfig.from_file(root / CONFIG_NAME)
    except ConfigError:
        raise
    files = _weight_files(root)
    with safe_open(root / next(iter(files)), framework="pt") as f:
        first = next(iter(f.keys()))
        dtype = f.get_slice(first).get_dtype()
    print(f"{root}")
    print(f"  parameters      {config.num_params() / 1e6:,.1f}M "
          f"({config.num_params(embeddings=False) / 1e6:,.1f}M without embeddings)")
    print(f"  stored dtype    {dtype}   files: {', '.join(files)}")
    print(f"  shape           d_model={config.d_model} n_layers={config.n_layers} n_heads={config.n_heads} "
          f"n_kv_heads={config.n_kv_heads} mlp={config.mlp_hidden_size} vocab={config.vocab_size}")
    print(f"  special ids     mask={config.mask_token_id} eos={config.eos_token_id} "
          f"bos={config.bos_token_id} eot={config.eot_token_id}")


def convert(model: str, out: str, dtype: str = "auto", max_shard_size: str = "5GB") -> None:
    """Re-save a model directory in our layout, optionally in another dtype or shard size.

    Args:
        model: source model directory (ours, a public LLaDA checkpoint, or a Hub id)
        out: destination directory
        dtype: auto (keep), float32, bfloat16 or float16
        max_shard_size: largest safetensors file, e.g. 5GB or 500MB
    """
    bundle = load(model, dtype=dtype)
    save(out, bundle.model, bundle.tokenizer, max_shard_size=max_shard_size)
    print(f"wrote {out}")

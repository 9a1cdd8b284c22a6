"""`llada info` and `llada push`: the model-directory commands, each a thin call into the library
(layout, hub) that prints what it did (`llada convert` is convert.py)."""

from __future__ import annotations

from pathlib import Path

from llada.checkpoint import hub
from llada.checkpoint.card import millions
from llada.checkpoint.layout import (
    is_hub_id,
    open_safetensors,
    read_config,
    weight_files,
)
from llada.checkpoint.options import LoadOptions


def info(model: str, revision: str | None = None) -> None:
    """Print a model directory's config, parameter count, dtype and files. For a Hub id only its
    config.json is downloaded.

    Args:
        model: a model directory (or Hub id)
        revision: a branch, tag or commit of a Hub id (default: main)
    """
    if is_hub_id(str(model)):
        config = hub.hub_config(str(model), revision)
        label = f"{model}" + (f" (revision {revision})" if revision else "")
        stored = config.extra.get("torch_dtype") or config.extra.get("dtype") or "unknown"
        where = f"stored dtype    {stored} (from config.json; the weights were not downloaded)"
    else:
        root = hub.resolve_dir(model, LoadOptions(revision=revision))
        config = read_config(root)
        files = weight_files(root)
        with open_safetensors(root / next(iter(files))) as f:
            dtype = f.get_slice(next(iter(f.keys()))).get_dtype()
        label, where = f"{root}", f"stored dtype    {dtype}   files: {', '.join(files)}"
    print(label)
    print(f"  family          {config.family}")
    print(f"  parameters      {millions(config.num_params())} "
          f"({millions(config.num_params(embeddings=False))} without embeddings"
          + (f"; {millions(config.num_params(active=True))} active per token)" if config.moe else ")"))
    print(f"  {where}")
    print(f"  shape           d_model={config.d_model} n_layers={config.n_layers} n_heads={config.n_heads} "
          f"n_kv_heads={config.n_kv_heads} head_dim={config.head_dim} mlp={config.mlp_hidden_size} "
          f"vocab={config.vocab_size}")
    print(f"  attention       {'causal' if config.causal else 'bidirectional'}"
          + (", shifted prediction (position i's state predicts token i + 1)" if config.shifted_prediction else "")
          + f"; RoPE base {config.rope_theta:g}"
          + (f", {config.rope_scaling['rope_type']} scaling" if config.rope_scaling else ""))
    if config.moe:
        print(f"  experts         {config.moe.describe()}")
    print(f"  special ids     mask={config.mask_token_id} eos={config.eos_token_id} "
          f"bos={config.bos_token_id} eot={config.eot_token_id}")


def push(model: str, repo: str, revision: str | None = None, private: bool = False,
         message: str | None = None) -> None:
    """Upload a model directory to the Hugging Face Hub (creating the repository if needed) in one
    commit: its weights, config.json, generation_config.json, tokenizer files, LoRA adapter and
    the records its model card cites, nothing else; the uploaded card names the repository, and
    the directory itself is left as it is. Log in first (`hf auth login` or the HF_TOKEN
    environment variable).

    Args:
        model: the model directory
        repo: the Hub repository id, e.g. your-name/llada-tiny
        revision: the branch to push to, created if missing (default: main)
        private: create the repository private (an existing one keeps its visibility)
        message: the commit message
    """
    hub.push(model, repo, revision=revision, private=private, message=message)
    print(f"pushed {Path(model).expanduser()} to {repo}" + (f" (branch {revision})" if revision else ""))

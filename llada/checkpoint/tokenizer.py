"""The tokenizer files of a model directory: opened (and checked against the model's config), and
left, after saving, naming no code the directory does not hold."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from llada.checkpoint.layout import auto_map_modules, check_entries, named_file, read_json
from llada.config import ModelConfig
from llada.errors import CheckpointError, ModelDirError
from llada.families import family_for
from llada.tokenizer import check_chat_template

TOKENIZER_CONFIG = "tokenizer_config.json"


def load_tokenizer(path: str | Path, config: ModelConfig | None = None) -> Any:
    """The tokenizer of a model directory, checked against the model config when one is given, and
    its chat template rendered once (`tokenizer.check_chat_template`). A family whose directories
    name remote tokenizer code (Dream) opens with its transformers class."""
    import transformers  # on first use: `import llada.checkpoint` stays without it

    root = Path(path)
    if not any((root / n).exists() for n in ("tokenizer.json", TOKENIZER_CONFIG, "tokenizer.model")):
        raise ModelDirError(f"{root}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    check_entries(root)
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
    path = root / TOKENIZER_CONFIG
    config = read_json(path) if path.exists() else None
    for key, value in config.items() if isinstance(config, dict) else ():
        if key.endswith(("_file", "_files")) and value is not None:
            for name in value if isinstance(value, list) else [value]:
                named_file(root, name, f"{path}: `{key}`")


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


def drop_unshipped_tokenizer_code(root: Path) -> None:
    """Remove a tokenizer_config.json `auto_map` naming modules the directory does not hold (Dream's
    tokenizer names its remote `tokenization_dream.py`; ours was opened, and is saved, as its
    transformers class, which `tokenizer_class` names): left in, it would ask for remote code that
    is not there."""
    path = root / TOKENIZER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    modules = auto_map_modules(config)
    if modules and not all((root / f"{m}.py").is_file() for m in modules):
        del config["auto_map"]
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")

"""LLaDA-8B (Base, Instruct), LLaDA-1.5 and every checkpoint of their architecture, ours included.

config.json uses LLaDA's field names, which are `ModelConfig`'s: the reader takes them as they are,
keeps the keys it does not use (`ModelConfig.extra`) and refuses reference options whose other
values are not implemented; the writer adds those options back, so LLaDA's reference code reads
what we save. The weights are our `LLaDAModel` parameter names behind the `model.` prefix of the
transformers wrapper. Variants that change only sizes or token ids (LLaDA-1.5 is
LLaDA-8B-Instruct's shape and ids) need nothing here: the mask, EOS and pad ids come from
config.json, BOS and end-of-turn from the tokenizer. Options of ours that LLaDA's config.json never
has (learned positions, shifted prediction, a head size other than d_model / n_heads, RoPE scaling)
are written only when set, and a directory that has one names no remote code (`checkpoint.saving`).
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from llada.config import ConfigError, ModelConfig, brief_repr, check_value
from llada.families.base import Family
from llada.model import LLaDAModel

logger = logging.getLogger(__name__)

PREFIX = "model."  # the transformers wrapper (llada.hf) holds the LLaDAModel as `.model`
REFERENCE_CODE_REPO = "GSAI-ML/LLaDA-8B-Base"  # configuration_llada.py / modeling_llada.py

REQUIRED = ("d_model", "n_layers", "n_heads", "vocab_size", "mask_token_id")
# Reference options whose non-default value we do not implement (field -> the value we support).
_FIXED = {"alibi": False, "rope": True, "attention_layer_norm": False, "layer_norm_with_affine": True}
# Keys a Hugging Face `config.json` may carry that say nothing about the network.
_METADATA_KEYS = {
    "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype",
    "use_cache", "init_device", "init_fn", "init_cutoff_factor", "precision", "flash_attention",
    "block_group_size", "multi_query_attention", "rope_full_precision", "alibi_bias_max",
    "attention_layer_norm_with_affine", "bias_for_layer_norm", "tie_word_embeddings",
    "llada_version",
}
# Fields that LLaDA's own config.json never has: written only when they differ from these defaults.
_WRITTEN_WHEN_SET = {"qk_norm": False, "partial_rotary_factor": 1.0, "moe": None, "learned_positions": False,
                     "shifted_prediction": False, "rope_scaling": None}
# ModelConfig fields that are not config.json keys.
_NOT_KEYS = ("extra", "family")


def config_from_json(data: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """ModelConfig of a LLaDA config.json (errors name `source` and the field); unknown keys are
    kept in `extra` and named in a warning."""
    missing = [k for k in REQUIRED if data.get(k) is None]
    if missing:
        raise ConfigError(f"{source}: missing required field(s) {', '.join(missing)}")
    names = {f.name for f in fields(ModelConfig)} - set(_NOT_KEYS)
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    unknown = sorted(k for k in extra if k not in _METADATA_KEYS and k not in _FIXED
                     and not k.startswith("_") and k not in ("name_or_path",))
    if unknown:
        logger.warning("%s: ignoring unknown field(s) %s", source, ", ".join(map(brief_repr, unknown[:20])))
    if data.get("include_qkv_bias") is None and "include_qkv_bias" in known:
        known["include_qkv_bias"] = False
    # LLaDA's own config.json names no BOS or end-of-turn id: they come from the tokenizer
    # (see checkpoint.load), never from a default.
    for key in ("bos_token_id", "eot_token_id"):
        known.setdefault(key, None)
    try:
        _check_fixed(data)
        return ModelConfig(**known, extra=extra)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from None


def _check_fixed(data: dict[str, Any]) -> None:
    """The reference options of _FIXED: absent, null, or the one value implemented (a JSON boolean)."""
    for key, wanted in _FIXED.items():
        if data.get(key) is not None:
            check_value(key, data[key], "bool")
            if data[key] != wanted:
                raise ConfigError(f"`{key}` = {data[key]!r} is not supported (only {wanted})")


def config_to_json(config: ModelConfig) -> dict[str, Any]:
    """LLaDA's config.json fields for `config`: ours plus the reference's fixed options, so both
    read it (unknown keys of the source file kept)."""
    out = dict(config.extra)
    out.update({f.name: getattr(config, f.name) for f in fields(config)
                if f.name not in (*_NOT_KEYS, *_WRITTEN_WHEN_SET, "head_dim")})
    out.update({name: getattr(config, name) for name, default in _WRITTEN_WHEN_SET.items()
                if getattr(config, name) != default})
    if config.custom_head_dim:  # the default, d_model / n_heads, is not written
        out["head_dim"] = config.head_dim
    if out.get("moe") is not None:
        out["moe"] = config.moe.to_dict()
    out.update(_FIXED)
    out.update({
        "multi_query_attention": None,
        "rope_full_precision": True,
        "block_group_size": 1,
        "use_cache": False,
        "bias_for_layer_norm": out.get("bias_for_layer_norm"),
    })
    return out


def _parameter_name(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key  # early files of ours had no prefix


FAMILY = Family(
    name="llada",
    model_types=("llada",),
    architectures=("LLaDAModelLM",),
    model_class=LLaDAModel,
    reader=config_from_json,
    writer=config_to_json,
    checkpoint_key=lambda name: PREFIX + name,
    parameter_name=_parameter_name,
    end_of_turn="<|eot_id|>",
    auto_map={
        "AutoConfig": f"{REFERENCE_CODE_REPO}--configuration_llada.LLaDAConfig",
        "AutoModel": f"{REFERENCE_CODE_REPO}--modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": f"{REFERENCE_CODE_REPO}--modeling_llada.LLaDAModelLM",
    },
)

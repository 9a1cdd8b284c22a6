"""Dream (Dream-org/Dream-v0-Base-7B, -Instruct-7B): a Qwen2-shaped mask predictor.

The network is LLaDA's block with biases on the q/k/v projections (RMSNorm, RoPE, GQA, SwiGLU, no
causal mask), so it is our `LLaDAModel` with `include_qkv_bias`. What differs:

- **The output is shifted by one.** Dream was initialised from an autoregressive model and kept its
  alignment: the state at position i predicts token i + 1. Dream's own sampler realigns by taking
  position i's logits from position i - 1 (position 0 keeps its own). Every Dream config has
  `shifted_prediction`, under which `LLaDAModel.forward` does that itself (`LLaDAModel.realign`,
  caches included), so its logits at i predict token i as every other model's do, and the samplers
  and likelihood estimators need no change. The flag is implied by Dream's config.json, never
  written into it.
- **config.json** has Qwen2's field names (`hidden_size`, `num_hidden_layers`, ...); `model_type`
  "Dream", architectures ["DreamModel"]. It names the mask, EOS, pad and BOS ids; the end-of-turn
  id is the tokenizer's `<|im_end|>` (Qwen's chat format).
- **Checkpoint keys** are those of Dream's modeling code: `model.embed_tokens.weight`,
  `model.layers.N.self_attn.q_proj.{weight,bias}`, ..., `model.norm.weight`, `lm_head.weight`.
  Saving writes them back, with Dream's config.json, so a saved directory opens in Dream's code.
- **The tokenizer** names remote code (`DreamTokenizer`, a copy of Qwen2's byte-level BPE); it is
  opened with transformers' own Qwen2 tokenizer class instead, without running remote code.
"""

from __future__ import annotations

from typing import Any

from llada.config import ModelConfig
from llada.families.base import Family, KeyTable, naming, read_fields, refuse_unless, unused_keys
from llada.model import LLaDAModel

REFERENCE_CODE_REPO = "Dream-org/Dream-v0-Base-7B"  # configuration_dream.py / modeling_dream.py

# Dream's config.json key -> ModelConfig field.
_FIELDS = {
    "hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads", "intermediate_size": "mlp_hidden_size", "vocab_size": "vocab_size",
    "max_position_embeddings": "max_sequence_length", "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps",
    "hidden_act": "activation_type", "tie_word_embeddings": "weight_tying", "initializer_range": "init_std",
    "attention_dropout": "attention_dropout", "mask_token_id": "mask_token_id", "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id", "bos_token_id": "bos_token_id",
}
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
             "mask_token_id", "eos_token_id")
# Dream's defaults (configuration_dream.py) for keys a config.json may leave out.
_DEFAULTS = {"max_position_embeddings": 32768, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu",
             "tie_word_embeddings": False, "initializer_range": 0.02, "attention_dropout": 0.0}
# Options of Dream's config that change the network, and the one value implemented here.
_FIXED = {"rope_scaling": None, "use_sliding_window": False, "use_mrope": False}


def config_from_json(data: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """ModelConfig of a Dream config.json (errors name `source` and the field)."""
    known = read_fields(data, source, _FIELDS, _REQUIRED, _DEFAULTS, _FIXED)
    known.setdefault("pad_token_id", known["eos_token_id"])
    known.setdefault("bos_token_id", None)  # then the tokenizer's, if it has one
    with naming(source):
        return ModelConfig(**known, include_qkv_bias=True, eot_token_id=None, shifted_prediction=True,
                           family="dream", extra=unused_keys(data, _FIELDS))


def _check(config: ModelConfig) -> None:
    """Refuse a config Dream's network or config.json cannot express."""
    refuse_unless(config, "Dream", {"include_bias": False, "include_qkv_bias": True, "scale_logits": False,
                                    "input_emb_norm": False, "causal": False, "qk_norm": False,
                                    "partial_rotary_factor": 1.0, "moe": None})


def config_to_json(config: ModelConfig) -> dict[str, Any]:
    """Dream's config.json fields for `config` (unknown keys of the source file kept)."""
    _check(config)
    out = dict(config.extra)
    out.update({theirs: getattr(config, ours) for theirs, ours in _FIELDS.items()})
    return out


# ------------------------------------------------------------------------------ state-dict adapter
KEYS = KeyTable(
    top={"transformer.wte.weight": "model.embed_tokens.weight", "transformer.ln_f.weight": "model.norm.weight",
         "transformer.ff_out.weight": "lm_head.weight"},
    block={"attn_norm": "input_layernorm", "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
           "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj", "ff_norm": "post_attention_layernorm",
           "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj"},
    family="Dream")
checkpoint_key, parameter_name = KEYS.checkpoint_key, KEYS.parameter_name


# -------------------------------------------------------------------------------------- the network


class DreamModel(LLaDAModel):
    """Dream's network: `LLaDAModel` with its logits realigned (`shifted_prediction`, which a
    config built by hand without it gets here: Dream's head always predicts the next token).
    Everything else is `LLaDAModel`'s, caches and activation checkpointing included."""

    def __init__(self, config: ModelConfig):
        _check(config)
        super().__init__(config if config.shifted_prediction else config.replace(shifted_prediction=True))


FAMILY = Family(
    name="dream",
    model_types=("Dream",),
    architectures=("DreamModel",),
    model_class=DreamModel,
    reader=config_from_json,
    writer=config_to_json,
    checkpoint_key=checkpoint_key,
    parameter_name=parameter_name,
    end_of_turn="<|im_end|>",
    auto_map={"AutoConfig": f"{REFERENCE_CODE_REPO}--configuration_dream.DreamConfig",
              "AutoModel": f"{REFERENCE_CODE_REPO}--modeling_dream.DreamModel"},
    tokenizer_class="Qwen2TokenizerFast",
)

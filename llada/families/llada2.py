"""LLaDA 2.x (inclusionAI/LLaDA2.0-mini 16B, -flash 100B, and the 2.1 releases): a mixture-of-experts
mask predictor trained as a block diffusion model.

The network is our `LLaDAModel` with options: RMSNorm over each head of the queries and keys
(`qk_norm`), RoPE on the first half of each head (`partial_rotary_factor` 0.5), a dense first block
and then blocks whose MLP is a router over 256 SwiGLU experts plus one shared expert (`MoEConfig`:
sigmoid scores, an expert bias that only chooses, 8 groups of which 4 are eligible, the chosen
weights renormalised and scaled by 2.5), as LLaDA 2.x's modeling code computes them. Block
diffusion is how it samples (`SamplerOptions.block_causal`): attention is bidirectional inside a
block of the sequence and causal across blocks. The 2.1 releases have the same network; their
sampler may also edit decoded tokens.

- **config.json**: transformers-style names; `model_type` "llada2_moe" (the 2.1 copies in dllm write
  "llada21_moe"), architectures ["LLaDA2MoeModelLM"]. It names the pad id (156892, also EOS) and no
  mask id: 156895, the default of its `generate`, is the default here.
- **Checkpoint keys**: `model.word_embeddings.weight`, `model.layers.N.attention.query_key_value.weight`
  (q, k and v stacked by rows: split on load, stacked on save), `attention.{query,key}_layernorm`,
  `attention.dense`, `mlp.gate.weight`, `mlp.gate.expert_bias`, `mlp.experts.E.{gate,up,down}_proj`,
  `mlp.shared_experts.*`, `model.norm.weight`, `lm_head.weight`.
- **Chat**: turns end with `<|role_end|>`.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from llada.config import ConfigError, ModelConfig, MoEConfig, check_depth
from llada.errors import CheckpointError
from llada.families.base import Family, KeyTable, naming, read_fields, read_values, refuse_unless, unused_keys
from llada.model import LLaDAModel

REFERENCE_CODE_REPO = "inclusionAI/LLaDA2.0-mini"  # configuration_llada2_moe.py / modeling_llada2_moe.py
MASK_TOKEN_ID = 156895  # the default of LLaDA 2.x's generate(mask_id=...); config.json names none
EOS_TOKEN_ID = 156892  # generate(eos_id=...), and config.json's pad_token_id

_FIELDS = {
    "hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads", "intermediate_size": "mlp_hidden_size", "vocab_size": "vocab_size",
    "max_position_embeddings": "max_sequence_length", "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps",
    "hidden_act": "activation_type", "tie_word_embeddings": "weight_tying", "initializer_range": "init_std",
    "attention_dropout": "attention_dropout", "use_qkv_bias": "include_qkv_bias", "use_qk_norm": "qk_norm",
    "partial_rotary_factor": "partial_rotary_factor", "mask_token_id": "mask_token_id",
    "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id", "bos_token_id": "bos_token_id",
}
# The mixture-of-experts keys and their types.
_MOE_KEYS = {"num_experts": "int", "num_shared_experts": "int", "num_experts_per_tok": "int", "n_group": "int",
             "topk_group": "int", "routed_scaling_factor": "float", "moe_intermediate_size": "int",
             "first_k_dense_replace": "int"}
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size",
             "num_experts", "num_experts_per_tok", "moe_intermediate_size")
# configuration_llada2_moe.py's defaults for keys a config.json may leave out (EOS and mask: its generate's).
_DEFAULTS = {"max_position_embeddings": 16384, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "hidden_act": "silu",
             "tie_word_embeddings": False, "initializer_range": 0.02, "attention_dropout": 0.1, "use_qkv_bias": False,
             "use_qk_norm": True, "partial_rotary_factor": 0.5, "pad_token_id": 126081, "eos_token_id": EOS_TOKEN_ID,
             "bos_token_id": None, "mask_token_id": MASK_TOKEN_ID, "num_key_value_heads": 0,
             "num_shared_experts": 0, "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5,
             "first_k_dense_replace": 0}
_FIXED = {"use_bias": False, "norm_head": False, "rope_scaling": None, "use_sliding_window": False,
          "score_function": "sigmoid", "moe_router_enable_expert_bias": True}


def config_from_json(data: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """ModelConfig of a LLaDA 2.x config.json (errors name `source` and the field)."""
    if data.get("use_bias", True) is not False:  # its configuration class defaults to True
        raise ConfigError(f"{source}: `use_bias` must be false (a bias on the attention output is not implemented)")
    known = read_fields(data, source, _FIELDS, _REQUIRED, _DEFAULTS, _FIXED)
    values = read_values(data, source, {**_MOE_KEYS, "head_dim": "int | None"}, _DEFAULTS)
    if not known["n_kv_heads"]:  # 0 or null: as many as the query heads (LLaDA 2.1's configuration)
        known["n_kv_heads"] = known["n_heads"]
    for key in ("num_shared_experts", "first_k_dense_replace"):
        if values[key] < 0:
            raise ConfigError(f"{source}: `{key}` must be at least 0, got {values[key]}")
    if values["first_k_dense_replace"] > known["n_layers"]:
        raise ConfigError(f"{source}: `first_k_dense_replace` = {values['first_k_dense_replace']} exceeds "
                          f"`num_hidden_layers` ({known['n_layers']})")
    with naming(source):
        check_depth(known["n_layers"])  # before range() makes a tuple of the dense blocks
        moe = MoEConfig(num_experts=values["num_experts"], num_experts_per_tok=values["num_experts_per_tok"],
                        intermediate_size=values["moe_intermediate_size"],
                        shared_intermediate_size=values["moe_intermediate_size"] * values["num_shared_experts"],
                        dense_layers=tuple(range(values["first_k_dense_replace"])), score="sigmoid",
                        norm_topk=True, scaling=values["routed_scaling_factor"], groups=values["n_group"],
                        topk_groups=values["topk_group"], bias="selection")
        config = ModelConfig(**known, moe=moe, eot_token_id=None, family="llada2",
                             extra=unused_keys(data, _FIELDS, _MOE_KEYS))
    if values.get("head_dim") not in (None, config.head_dim):
        raise ConfigError(f"{source}: `head_dim` = {values['head_dim']} is not supported (only hidden_size / "
                          f"num_attention_heads = {config.head_dim})")
    return config


def config_to_json(config: ModelConfig) -> dict[str, Any]:
    """LLaDA 2.x's config.json fields for `config` (unknown keys of the source file kept)."""
    m = config.moe
    layout_ok = (m is not None and m.score == "sigmoid" and m.norm_topk and m.bias == "selection"
                 and m.dense_layers == tuple(range(len(m.dense_layers)))
                 and not m.shared_intermediate_size % m.intermediate_size)
    refuse_unless(config, "LLaDA 2.x", {"include_bias": False, "scale_logits": False, "input_emb_norm": False,
                                        "causal": False, "shifted_prediction": False},
                  also=[] if layout_ok else ["a router or layout other than LLaDA 2.x's"])
    out = dict(config.extra)
    out.update({theirs: getattr(config, ours) for theirs, ours in _FIELDS.items()})
    out.update({
        "num_experts": m.num_experts, "num_experts_per_tok": m.num_experts_per_tok,
        "moe_intermediate_size": m.intermediate_size,
        "num_shared_experts": m.shared_intermediate_size // m.intermediate_size,
        "first_k_dense_replace": len(m.dense_layers), "n_group": m.groups, "topk_group": m.topk_groups,
        "routed_scaling_factor": m.scaling, "head_dim": config.head_dim, "use_bias": False,
    })
    return out


# ------------------------------------------------------------------------------ state-dict adapter
_QKV = ("q_proj", "k_proj", "v_proj")  # stacked by rows into one query_key_value
KEYS = KeyTable(
    top={"transformer.wte.weight": "model.word_embeddings.weight", "transformer.ln_f.weight": "model.norm.weight",
         "transformer.ff_out.weight": "lm_head.weight"},
    block={"attn_norm": "input_layernorm", **{n: "attention.query_key_value" for n in _QKV},
           "attn_out": "attention.dense", "q_norm": "attention.query_layernorm", "k_norm": "attention.key_layernorm",
           "ff_norm": "post_attention_layernorm", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
           "ff_out": "mlp.down_proj", "moe.router": "mlp.gate"},
    experts="mlp.experts", shared="mlp.shared_experts", bias="mlp.gate.expert_bias", family="LLaDA 2.x")
checkpoint_key, parameter_name = KEYS.checkpoint_key, KEYS.parameter_name
_FUSED = re.compile(r"model\.layers\.(\d+)\.attention\.query_key_value\.(weight|bias)")
_OURS_QKV = re.compile(r"transformer\.blocks\.\d+\.([qkv]_proj)\.(weight|bias)")


def split(key: str, tensor: Tensor, config: ModelConfig) -> dict[str, Tensor] | None:
    """A fused query_key_value (rows: q, n_heads * head_dim; then k and v, n_kv_heads * head_dim
    each) as our q_proj, k_proj and v_proj; None for any other key."""
    m = _FUSED.fullmatch(key)
    if m is None:
        return None
    kv_rows = config.n_kv_heads * config.head_dim
    rows = config.n_heads * config.head_dim + 2 * kv_rows
    if tensor.shape[0] != rows:
        raise CheckpointError(f"{key} has shape {tuple(tensor.shape)}, but config.json implies "
                              f"{(rows, *tensor.shape[1:])} (q, k and v of {config.n_heads} + 2 x "
                              f"{config.n_kv_heads} heads of {config.head_dim})")
    q, k, v = tensor.split([config.n_heads * config.head_dim, kv_rows, kv_rows], dim=0)
    return {f"transformer.blocks.{m[1]}.{name}.{m[2]}": t for name, t in zip(_QKV, (q, k, v), strict=True)}


def join(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict in LLaDA 2.x's keys, q_proj, k_proj and v_proj stacked into query_key_value."""
    out: dict[str, Tensor] = {}
    fused: dict[str, dict[str, Tensor]] = {}
    for name, tensor in state.items():
        m = _OURS_QKV.fullmatch(name)
        if m is not None:
            fused.setdefault(checkpoint_key(name), {})[m[1]] = tensor
        else:
            out[checkpoint_key(name)] = tensor
    for key, parts in fused.items():
        out[key] = torch.cat([parts[n] for n in _QKV], dim=0)
    return out


FAMILY = Family(
    name="llada2",
    model_types=("llada2_moe", "llada21_moe"),  # the second: LLaDA 2.1 as dllm's copies write it
    architectures=("LLaDA2MoeModelLM",),
    model_class=LLaDAModel,
    reader=config_from_json,
    writer=config_to_json,
    checkpoint_key=checkpoint_key,
    parameter_name=parameter_name,
    end_of_turn="<|role_end|>",
    sampler_preset="llada2",
    auto_map={"AutoConfig": f"{REFERENCE_CODE_REPO}--configuration_llada2_moe.LLaDA2MoeConfig",
              "AutoModel": f"{REFERENCE_CODE_REPO}--modeling_llada2_moe.LLaDA2MoeModel",
              "AutoModelForCausalLM": f"{REFERENCE_CODE_REPO}--modeling_llada2_moe.LLaDA2MoeModelLM"},
    split=split,
    join=join,
)

"""LLaDA-MoE (inclusionAI/LLaDA-MoE-7B-A1B-Base, -Instruct): LLaDA's diffusion objective on an
OLMoE-shaped mixture-of-experts network (7B parameters, 1.4B active per token).

The network is our `LLaDAModel` with options: RMSNorm over each head of the queries and keys
(`qk_norm`), and in each block a router sending every token to 8 of 64 SwiGLU experts (`MoEConfig`).
What the family maps:

- **config.json** has transformers-style names (`hidden_size`, `num_experts`,
  `expert_intermediate_size`, `moe_layer_freq` (1 = a mixture-of-experts block, 0 = the dense MLP
  of `dense_intermediate_size`), ...); its `model_type` is "llada" (the same as LLaDA-8B's, so the
  architecture `LLaDAMoEModelLM` decides) or "lladamoe". It names no mask id: the model card's
  `generate(mask_id=156895)` is the default. The routing follows LLaDA-MoE's modeling code, which
  uses a softmax router and never renormalises the top-k weights whatever `norm_topk_prob`,
  `moe_router_score_function` and `routed_scaling_factor` say; those keys are kept on save. With
  `moe_router_enable_expert_bias` the code adds a per-expert bias to the probabilities before
  choosing and keeps it in the weights (`MoEConfig.bias = "weights"`).
- **Checkpoint keys** are those of its modeling code: `model.embed_tokens.weight`,
  `model.layers.N.self_attn.{q,k,v,o}_proj.weight`, `self_attn.{q,k}_norm.weight`,
  `mlp.gate.weight`, `mlp.experts.E.{gate,up,down}_proj.weight`, `mlp.expert_bias`,
  `shared_expert.*`, `model.norm.weight`, `lm_head.weight`.
- **Chat**: turns end with `<|role_end|>` (`<role>HUMAN</role>...<|role_end|><role>ASSISTANT</role>`).
"""

from __future__ import annotations

from typing import Any

from llada.config import ConfigError, ModelConfig, MoEConfig, brief_repr
from llada.families.base import Family, KeyTable, naming, read_fields, read_values, refuse_unless, unused_keys
from llada.model import LLaDAModel

REFERENCE_CODE_REPO = "inclusionAI/LLaDA-MoE-7B-A1B-Base"  # configuration_lladamoe.py / modeling_lladamoe.py
MASK_TOKEN_ID = 156895  # the model card's generate(mask_id=...); config.json names none

_FIELDS = {
    "hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads", "dense_intermediate_size": "mlp_hidden_size", "vocab_size": "vocab_size",
    "max_position_embeddings": "max_sequence_length", "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps",
    "hidden_act": "activation_type", "tie_word_embeddings": "weight_tying", "initializer_range": "init_std",
    "attention_dropout": "attention_dropout", "mask_token_id": "mask_token_id", "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id", "bos_token_id": "bos_token_id", "qk_layernorm": "qk_norm",
    "partial_rotary_factor": "partial_rotary_factor",
}
# The mixture-of-experts keys and their types (`moe_layer_freq` is also checked to hold a 0 or 1 per block).
_MOE_KEYS = {"num_experts": "int", "num_experts_per_tok": "int", "expert_intermediate_size": "int",
             "shared_expert_intermediate_size": "int | None", "moe_layer_freq": "tuple[int, ...]",
             "moe_router_enable_expert_bias": "bool"}
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "rope_theta", "num_experts",
             "num_experts_per_tok", "expert_intermediate_size", "moe_layer_freq")
# configuration_lladamoe.py's defaults for keys a config.json may leave out.
_DEFAULTS = {"max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
             "initializer_range": 0.02, "attention_dropout": 0.0, "pad_token_id": 1, "eos_token_id": 50279,
             "bos_token_id": None, "qk_layernorm": False, "partial_rotary_factor": 1.0, "mask_token_id": MASK_TOKEN_ID,
             "moe_router_enable_expert_bias": False}
_FIXED = {"attention_bias": False, "clip_qkv": None, "rope_scaling": None}


def config_from_json(data: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """ModelConfig of a LLaDA-MoE config.json (errors name `source` and the field)."""
    known = read_fields(data, source, _FIELDS, _REQUIRED, _DEFAULTS, _FIXED)
    freq = data["moe_layer_freq"]
    if not isinstance(freq, list) or len(freq) != known["n_layers"] or any(type(f) is not int or f not in (0, 1)
                                                                           for f in freq):
        raise ConfigError(f"{source}: `moe_layer_freq` must list 0 or 1 for each of the {known['n_layers']} "
                          f"layers, got {brief_repr(freq)}")
    values = read_values(data, source, _MOE_KEYS, _DEFAULTS)
    dense = tuple(i for i, f in enumerate(freq) if f == 0)
    if not dense:  # every block is an MoE: the dense size is unused (and may be absent)
        known["mlp_hidden_size"] = known.get("mlp_hidden_size") or values["expert_intermediate_size"]
    with naming(source):
        moe = MoEConfig(num_experts=values["num_experts"], num_experts_per_tok=values["num_experts_per_tok"],
                        intermediate_size=values["expert_intermediate_size"],
                        shared_intermediate_size=values.get("shared_expert_intermediate_size") or 0,
                        dense_layers=dense, score="softmax", norm_topk=False, scaling=1.0,
                        bias="weights" if values["moe_router_enable_expert_bias"] else None)
        return ModelConfig(**known, moe=moe, eot_token_id=None, family="llada_moe",
                           extra=unused_keys(data, _FIELDS, _MOE_KEYS))


def config_to_json(config: ModelConfig) -> dict[str, Any]:
    """LLaDA-MoE's config.json fields for `config` (unknown keys of the source file kept)."""
    m = config.moe
    router_ok = (m is not None and m.score == "softmax" and not m.norm_topk and m.scaling == 1.0 and m.groups == 1
                 and m.bias != "selection")
    refuse_unless(config, "LLaDA-MoE", {"include_bias": False, "include_qkv_bias": False, "scale_logits": False,
                                        "input_emb_norm": False, "causal": False,
                                        "shifted_prediction": False},
                  also=[] if router_ok else ["a router other than LLaDA-MoE's (softmax, top-k weights as they are)"])
    out = dict(config.extra)
    out.update({theirs: getattr(config, ours) for theirs, ours in _FIELDS.items()})
    out.update({
        "num_experts": m.num_experts, "num_experts_per_tok": m.num_experts_per_tok,
        "expert_intermediate_size": m.intermediate_size,
        "shared_expert_intermediate_size": m.shared_intermediate_size or None,
        "moe_layer_freq": [0 if i in m.dense_layers else 1 for i in range(config.n_layers)],
        "moe_router_enable_expert_bias": m.bias == "weights",
        "attention_bias": False, "clip_qkv": None,
    })
    return out


# ------------------------------------------------------------------------------ state-dict adapter
KEYS = KeyTable(
    top={"transformer.wte.weight": "model.embed_tokens.weight", "transformer.ln_f.weight": "model.norm.weight",
         "transformer.ff_out.weight": "lm_head.weight"},
    block={"attn_norm": "input_layernorm", "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
           "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj", "q_norm": "self_attn.q_norm",
           "k_norm": "self_attn.k_norm", "ff_norm": "post_attention_layernorm", "ff_proj": "mlp.gate_proj",
           "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj", "moe.router": "mlp.gate"},
    experts="mlp.experts", shared="shared_expert", bias="mlp.expert_bias", family="LLaDA-MoE")
checkpoint_key, parameter_name = KEYS.checkpoint_key, KEYS.parameter_name


FAMILY = Family(
    name="llada_moe",
    # "llada", LLaDA-8B's model_type, is what its public config.json says (the architecture decides);
    # dllm's copies write "lladamoe"
    model_types=("llada", "lladamoe"),
    architectures=("LLaDAMoEModelLM",),
    model_class=LLaDAModel,
    reader=config_from_json,
    writer=config_to_json,
    checkpoint_key=checkpoint_key,
    parameter_name=parameter_name,
    end_of_turn="<|role_end|>",
    auto_map={"AutoConfig": f"{REFERENCE_CODE_REPO}--configuration_lladamoe.LLaDAMoEConfig",
              "AutoModel": f"{REFERENCE_CODE_REPO}--modeling_lladamoe.LLaDAMoEModelLM",
              "AutoModelForCausalLM": f"{REFERENCE_CODE_REPO}--modeling_lladamoe.LLaDAMoEModelLM"},
    claims=lambda data: bool(data.get("num_experts")),  # a "llada" config.json with experts, no architecture
)

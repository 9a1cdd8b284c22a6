"""LLaDA-MoE's and LLaDA 2.x's public config.json shapes and tiny directories in their public layout,
shared by the family, load-option and hostile-directory tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from support.tiny import make_word_tokenizer

# inclusionAI/LLaDA2.0-mini's config.json values (as in inclusionAI/dFactory's
# configs/model_configs/llada2_mini/config.json, which differs only in model_type).
LLADA2_MINI_CONFIG = {
    "architectures": ["LLaDA2MoeModelLM"], "attention_dropout": 0.0, "num_hidden_layers": 20, "hidden_size": 2048,
    "intermediate_size": 5120, "first_k_dense_replace": 1, "hidden_act": "silu", "max_position_embeddings": 16384,
    "model_type": "llada2_moe", "moe_intermediate_size": 512, "norm_topk_prob": True, "num_experts_per_tok": 8,
    "norm_head": False, "num_attention_heads": 16, "num_experts": 256, "num_key_value_heads": 4,
    "rope_theta": 600000, "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_bias": False, "use_rmsnorm": True, "rms_norm_eps": 1e-06, "head_dim": 128, "num_shared_experts": 1,
    "use_cache": False, "use_qkv_bias": False, "embedding_dropout": 0.0, "norm_softmax": False,
    "output_dropout": 0.0, "vocab_size": 157184, "rotary_dim": 64, "using_split_qkv_in_self_attention": False,
    "router_dtype": "fp32", "moe_router_enable_expert_bias": True, "routed_scaling_factor": 2.5, "n_group": 8,
    "topk_group": 4, "score_function": "sigmoid", "initializer_range": 0.02, "max_window_layers": 28,
    "output_router_logits": False, "pad_token_id": 156892, "partial_rotary_factor": 0.5, "use_sliding_window": False,
}


# -flash: the same keys; these values differ.
LLADA2_FLASH_CONFIG = {**LLADA2_MINI_CONFIG, "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 9216,
                       "moe_intermediate_size": 1024, "num_attention_heads": 32}


# inclusionAI/LLaDA-MoE-7B-A1B-Base: the sizes its paper and model card give (hidden 2048, 16 layers
# of 64 experts, 8 per token, expert MLP 1024, dense MLP 8192, RoPE base 50000 for 8k context, QK
# norm) and its model_type "llada"; the vocabulary of 157,184 and the ids are those of the Ling
# tokenizer it shares with LLaDA 2.x (EOS 156892, mask 156895 as in dInfer's and the card's calls).
LLADA_MOE_7B_CONFIG = {
    "architectures": ["LLaDAMoEModelLM"], "model_type": "llada", "hidden_size": 2048, "num_hidden_layers": 16,
    "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 64, "num_experts_per_tok": 8,
    "expert_intermediate_size": 1024, "dense_intermediate_size": 8192, "moe_layer_freq": [1] * 16,
    "router_aux_loss_coef": 0.01, "rope_theta": 50000, "max_position_embeddings": 8192, "qk_layernorm": True,
    "hidden_act": "silu", "vocab_size": 157184, "eos_token_id": 156892, "pad_token_id": 156892,
    "partial_rotary_factor": 1.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "attention_bias": False,
    "clip_qkv": None, "shared_expert_intermediate_size": None, "moe_router_enable_expert_bias": False,
    "moe_router_score_function": "softmax", "norm_topk_prob": False, "rope_scaling": None,
}


TINY_LLADA2 = {**LLADA2_MINI_CONFIG, "num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 48,
               "moe_intermediate_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
               "num_experts": 16, "num_experts_per_tok": 3, "n_group": 4, "topk_group": 2, "vocab_size": 64,
               "pad_token_id": 62, "eos_token_id": 62, "mask_token_id": 63, "max_position_embeddings": 256}


TINY_LLADA_MOE = {**LLADA_MOE_7B_CONFIG, "num_hidden_layers": 3, "hidden_size": 32, "dense_intermediate_size": 48,
                  "expert_intermediate_size": 16, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "num_experts": 8, "num_experts_per_tok": 3, "moe_layer_freq": [0, 1, 1],
                  "shared_expert_intermediate_size": 24, "moe_router_enable_expert_bias": True,
                  "vocab_size": 64, "pad_token_id": 62, "eos_token_id": 62, "mask_token_id": 63,
                  "max_position_embeddings": 256}


def _public_keys(cfg: dict) -> list[str]:
    """The checkpoint keys of each family's modeling code for a config, written out by hand."""
    n = cfg["num_hidden_layers"]
    if cfg["architectures"] == ["LLaDA2MoeModelLM"]:
        keys = ["model.word_embeddings.weight", "model.norm.weight", "lm_head.weight"]
        for i in range(n):
            p = f"model.layers.{i}."
            keys += [p + k for k in ("input_layernorm.weight", "post_attention_layernorm.weight",
                                     "attention.query_key_value.weight", "attention.dense.weight",
                                     "attention.query_layernorm.weight", "attention.key_layernorm.weight")]
            if i < cfg["first_k_dense_replace"]:
                keys += [p + f"mlp.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
            else:
                keys += [p + "mlp.gate.weight", p + "mlp.gate.expert_bias"]
                keys += [p + f"mlp.{e}.{w}.weight" for e in [f"experts.{j}" for j in range(cfg["num_experts"])]
                         + ["shared_experts"] for w in ("gate_proj", "up_proj", "down_proj")]
        return keys
    keys = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(n):
        p = f"model.layers.{i}."
        keys += [p + k for k in ("input_layernorm.weight", "post_attention_layernorm.weight",
                                 "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                 "self_attn.o_proj.weight", "self_attn.q_norm.weight", "self_attn.k_norm.weight")]
        if cfg["moe_layer_freq"][i] == 0:
            keys += [p + f"mlp.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
        else:
            keys += [p + "mlp.gate.weight"] + ([p + "mlp.expert_bias"] if cfg["moe_router_enable_expert_bias"] else [])
            keys += [p + f"{e}.{w}.weight" for e in [f"mlp.experts.{j}" for j in range(cfg["num_experts"])]
                     + (["shared_expert"] if cfg["shared_expert_intermediate_size"] else [])
                     for w in ("gate_proj", "up_proj", "down_proj")]
    return keys


def _shape(cfg: dict, key: str) -> tuple[int, ...]:
    """The tensor shape of a public key, from the config alone."""
    d, v, hd = cfg["hidden_size"], cfg["vocab_size"], cfg["hidden_size"] // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    expert = cfg.get("moe_intermediate_size") or cfg.get("expert_intermediate_size")
    shared = expert * cfg["num_shared_experts"] if "num_shared_experts" in cfg else cfg["shared_expert_intermediate_size"]
    dense = cfg.get("intermediate_size") or cfg.get("dense_intermediate_size")
    if key.endswith(("embeddings.weight", "embed_tokens.weight")):
        return (v, d)
    if key == "lm_head.weight":
        return (v, d)
    if key.endswith(("layernorm.weight", "norm.weight")):
        return (hd,) if any(s in key for s in ("q_norm", "k_norm", "query_layernorm", "key_layernorm")) else (d,)
    if key.endswith("expert_bias"):
        return (cfg["num_experts"],)
    if key.endswith("gate.weight"):
        return (cfg["num_experts"], d)
    if "query_key_value" in key:
        return (d + 2 * kv, d)
    if key.endswith(("q_proj.weight", "o_proj.weight", "dense.weight")):
        return (d, d)
    if key.endswith(("k_proj.weight", "v_proj.weight")):
        return (kv, d)
    inner = expert if ".experts." in key else shared if "shared" in key else dense
    return (d, inner) if key.endswith("down_proj.weight") else (inner, d)


def _public_dir(root: Path, cfg: dict, seed: int = 1) -> tuple[Path, dict[str, torch.Tensor]]:
    """A directory in the family's public layout: its config.json, random weights under its keys
    (two shards), a tokenizer with the family's end-of-turn token."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key in _public_keys(cfg):
        shape = _shape(cfg, key)
        if key.endswith("norm.weight") or "layernorm" in key:
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("expert_bias"):
            state[key] = 0.05 * torch.randn(shape, generator=g)
        else:
            state[key] = torch.randn(shape, generator=g) * shape[-1] ** -0.5
    state["lm_head.weight"][cfg["mask_token_id"]] = 0  # as a trained model: the mask never the likeliest
    root.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    weight_map = {}
    for i in range(2):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: state[k].contiguous() for k in keys[i::2]}, str(root / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys[i::2]})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps(cfg))
    tok = make_word_tokenizer(["the", "cat", "sat", "on", "mat", "a", "dog", "ran"])
    tok.add_special_tokens({"additional_special_tokens": ["<|role_end|>"]})
    # the families' chat format, reduced to what the word tokenizer knows: each turn ends with <|role_end|>
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} <|role_end|> {% endfor %}"
    tok.save_pretrained(root)
    return root, state


def assert_same_float32_logits(got: torch.Tensor, want: torch.Tensor) -> None:
    """The same weights computed two ways (loaded from two layouts, offloaded or not) in float32:
    equal up to the order of float32 sums, which a CPU's matrix kernels may choose differently
    (up to 8.3e-7 seen on one machine for these tiny models); a wrong or missing weight moves them
    by orders of magnitude more."""
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

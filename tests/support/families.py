"""Public config.json shapes and tiny directories of LLaDA and Dream, shared by the family tests,
the hostile-config tests and integration/test_family_surfaces.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# LLaDA-8B-Base's and -Instruct's config.json (GSAI-ML, 1.39 kB each; LLaDA-1.5's has the same
# size, fields and values: the same network and ids, other weights). Its keys, in its order.
LLADA_8B_CONFIG = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                 "AutoModel": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 4096,
    "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096,
    "mlp_hidden_size": 12288, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
    "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
    "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
    "rope_theta": 500000.0, "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False,
    "vocab_size": 126464, "weight_tying": False,
}

TINY_LLADA = {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 96,
              "embedding_size": 64, "vocab_size": 64, "max_sequence_length": 128}


def _tiny_llada_config(**changes) -> dict:
    """LLaDA-8B's config.json with tiny sizes, ids placed as `make_word_tokenizer` places them."""
    return {**LLADA_8B_CONFIG, **TINY_LLADA, "mask_token_id": 63, "eos_token_id": 62, "pad_token_id": 62,
            **changes}


def _random_state(model: torch.nn.Module, key) -> dict[str, torch.Tensor]:
    """Random weights for every parameter of `model`, under checkpoint keys `key(name)`."""
    g = torch.Generator().manual_seed(1)
    out = {}
    for name, p in model.named_parameters():
        scale = 1.0 if name.endswith("norm.weight") or ".ln_f." in name else p.shape[-1] ** -0.5
        base = 1.0 if name.endswith("norm.weight") or ".ln_f." in name else 0.0
        out[key(name)] = base + scale * torch.randn(p.shape, generator=g)
    return out


# Dream-v0-Base-7B's and -Instruct-7B's config.json (Dream-org; the same shape and ids for both):
# its fields, with the public values.
DREAM_7B_CONFIG = {
    "architectures": ["DreamModel"], "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584,
    "initializer_range": 0.02, "intermediate_size": 18944, "mask_token_id": 151666,
    "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "Dream",
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "pad_token_id": 151643,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.46.2",
    "use_cache": False, "use_sliding_window": False, "vocab_size": 152064,
}


TINY_DREAM = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 128}


DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]  # Qwen's, then Dream's mask


QWEN_CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _write_dream_tokenizer(root: Path) -> dict[str, int]:
    """A byte-level BPE in Dream's tokenizer layout: vocab.json + merges.txt, and a
    tokenizer_config.json that names Dream's remote `DreamTokenizer` class. Returns the special ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    root.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(["the cat sat on the mat", "a dog ran"] * 10,
                            trainers.BpeTrainer(vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.model.save(str(root))
    n = bpe.get_vocab_size()
    ids = {token: n + i for i, token in enumerate(DREAM_SPECIALS)}
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for t, i in ids.items()}
    (root / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}, "bos_token": None,
        "chat_template": QWEN_CHAT, "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
        "errors": "replace", "mask_token": "<|mask|>", "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "DreamTokenizer", "unk_token": None}))
    return ids


def _tiny_dream_config(ids: dict[str, int]) -> dict:
    """Dream's config.json with tiny sizes: the tokenizer's ids, 4 padded embedding rows past them."""
    eos = ids["<|endoftext|>"]
    return {**DREAM_7B_CONFIG, **TINY_DREAM, "vocab_size": ids["<|mask|>"] + 5, "mask_token_id": ids["<|mask|>"],
            "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos, "torch_dtype": "float32"}

"""Hostile and careless config.json files, for every family: each is refused while the config is
read, before a network is built or a weight file opened, with one short line that names the file,
the field and what is allowed.

The configs are the tiny public-layout ones of tests/unit/families/test_families.py, test_dream.py and test_moe_families.py
with one change each. Reading goes through `checkpoint.read_config`, which `load`, `info` and
`convert` use; a case that got past it would be built on the meta device (or looped over by
`num_params`) next, which is where 1e12 layers hung before.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from support.families import DREAM_7B_CONFIG, TINY_DREAM, _tiny_llada_config
from support.moe_families import TINY_LLADA2, TINY_LLADA_MOE, _public_dir

import llada
from llada.checkpoint.layout import read_config
from llada.commands.checkpoint import info
from llada.config import MAX_PARAMS, ConfigError, ModelConfig, MoEConfig
from llada.errors import UserError
from llada.families import config_from_json
from llada.model import LLaDAModel

NAN, INF = math.nan, math.inf


HUGE = "x" * 10_000_000  # a value whose repr would make a 10 MB message


TINY_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 16}


BASES = {
    "llada": _tiny_llada_config(),
    "dream": {**DREAM_7B_CONFIG, **TINY_DREAM, "vocab_size": 64, "mask_token_id": 63, "bos_token_id": 62,
              "eos_token_id": 62, "pad_token_id": 62},
    "llada_moe": TINY_LLADA_MOE,
    "llada2": TINY_LLADA2,
}


CASES = [
    # item 3: sizes refused, with the number, before anything is built or looped over
    ("llada", {"n_layers": 10**12}, r"n_layers=1000000000000, .* give 1\.3e\+16 parameters \(53\.5 PB in float32\), "
                                    r"over the 1e\+13"),
    ("llada", {"vocab_size": 10**13, "embedding_size": None}, "parameters"),
    ("llada", {"n_layers": 10**6}, "`n_layers` = 1000000 blocks: at most 1024"),
    ("llada", {"n_layers": 1e12}, "`n_layers` must be an integer, got 1000000000000.0"),
    ("llada", {"mlp_hidden_size": None, "mlp_ratio": "x", "d_model": 20_000_000}, "`mlp_ratio` must be an integer"),
    ("llada", {"d_model": HUGE}, "`d_model` must be an integer, got 'xxx"),
    ("llada", {"max_sequence_length": 2**70}, r"`max_sequence_length` = 1180591620717411303424 is out of range"),
    ("llada", {"n_heads": 0}, "`n_heads` must be a positive integer"),
    ("llada", {"moe": {**TINY_MOE, "num_experts": 10**6}}, r"1000000 experts in each of 2 blocks \(2000000 in all\): at most 65536"),
    ("dream", {"num_hidden_layers": 10**12}, "parameters"),
    ("dream", {"hidden_size": HUGE}, "`hidden_size` must be an integer"),
    ("dream", {"num_attention_heads": 0}, "`n_heads` must be a positive integer"),
    ("llada_moe", {"num_experts": 10**6}, "1000000 experts in each of 2 blocks"),
    ("llada_moe", {"expert_intermediate_size": 10**12}, "parameters"),
    ("llada_moe", {"num_hidden_layers": "3"}, "`num_hidden_layers` must be an integer"),
    ("llada2", {"first_k_dense_replace": 10**12}, "`first_k_dense_replace` = 1000000000000 exceeds"),
    ("llada2", {"first_k_dense_replace": -1}, "`first_k_dense_replace` must be at least 0"),
    ("llada2", {"moe_intermediate_size": 10**12}, "parameters"),
    ("llada2", {"num_experts": 10**6, "n_group": 1, "topk_group": 1}, "1000000 experts in each of 2 blocks"),
    ("llada2", {"num_attention_heads": 0}, "`n_heads` must be a positive integer, got 0"),
    ("llada2", {"num_hidden_layers": 10**12, "first_k_dense_replace": 10**12}, "`n_layers` = 1000000000000 blocks"),
    ("llada2", {"num_attention_heads": "4"}, "`num_attention_heads` must be an integer"),
    ("llada2", {"num_shared_experts": "1"}, "`num_shared_experts` must be an integer"),
    ("llada2", {"num_shared_experts": 10**12}, "parameters"),
    # item 4: booleans are JSON booleans, numbers finite, of the type the field has
    ("llada", {"causal": "no"}, "`causal` must be true or false, got 'no'"),
    ("llada", {"scale_logits": "false"}, "`scale_logits` must be true or false"),
    ("llada", {"weight_tying": 1}, "`weight_tying` must be true or false, got 1"),
    ("llada", {"rope": "no"}, "`rope` must be true or false"),
    ("llada", {"alibi": "false"}, "`alibi` must be true or false"),
    ("llada", {"rope_theta": NAN}, "`rope_theta` must be a finite number, got nan"),
    ("llada", {"rms_norm_eps": INF}, "`rms_norm_eps` must be a finite number, got inf"),
    ("llada", {"init_std": NAN}, "`init_std` must be a finite number"),
    ("llada", {"init_std": -1.0}, "`init_std` must be at least 0"),
    ("llada", {"partial_rotary_factor": -INF}, "`partial_rotary_factor` must be a finite number"),
    ("llada", {"attention_dropout": "0.1"}, "`attention_dropout` must be a finite number, got '0.1'"),
    ("llada", {"mask_token_id": True}, "`mask_token_id` must be an integer, got True"),
    ("llada", {"bos_token_id": 1.5}, "`bos_token_id` must be an integer"),
    ("llada", {"mask_token_id": "63"}, "`mask_token_id` must be an integer"),
    ("llada", {"activation_type": ["silu"]}, "`activation_type` must be a string"),
    ("llada", {"moe": {**TINY_MOE, "scaling": NAN}}, "moe `scaling` must be a finite number"),
    ("llada", {"moe": {**TINY_MOE, "norm_topk": "false"}}, "moe `norm_topk` must be true or false"),
    ("llada", {"moe": {**TINY_MOE, "dense_layers": "01"}}, "moe `dense_layers` must be a list of integers"),
    ("llada", {"moe": {**TINY_MOE, "shared_intermediate_size": -1}}, "moe `shared_intermediate_size` must be"),
    ("dream", {"tie_word_embeddings": "false"}, "`tie_word_embeddings` must be true or false"),
    ("dream", {"rope_theta": NAN}, "`rope_theta` must be a finite number"),
    ("dream", {"rms_norm_eps": "1e-6"}, "`rms_norm_eps` must be a finite number"),
    ("dream", {"use_sliding_window": "no"}, "`use_sliding_window` must be true or false"),
    ("llada_moe", {"qk_layernorm": "false"}, "`qk_layernorm` must be true or false"),
    ("llada_moe", {"moe_router_enable_expert_bias": "false"}, "`moe_router_enable_expert_bias` must be true or"),
    ("llada_moe", {"shared_expert_intermediate_size": "x"}, "`shared_expert_intermediate_size` must be an int"),
    ("llada_moe", {"moe_layer_freq": [2, 1, 1]}, "`moe_layer_freq` must list 0 or 1"),
    ("llada_moe", {"moe_layer_freq": [True, 1, 1]}, "`moe_layer_freq` must list 0 or 1"),
    ("llada2", {"use_qk_norm": "false"}, "`use_qk_norm` must be true or false"),
    ("llada2", {"routed_scaling_factor": "x"}, "`routed_scaling_factor` must be a finite number"),
    ("llada2", {"routed_scaling_factor": NAN}, "`routed_scaling_factor` must be a finite number"),
    ("llada2", {"routed_scaling_factor": "2.5"}, "`routed_scaling_factor` must be a finite number"),
    # item 5: shapes that ended in a traceback
    ("llada", {"moe": "x"}, "`moe` must be an object of MoE fields or null, got 'x'"),
    ("llada", {"moe": [1, 2]}, "`moe` must be an object of MoE fields"),
    ("llada", {"moe": {"num_experts": 4}}, "moe: missing field\\(s\\) num_experts_per_tok, intermediate_size"),
    ("llada", {"moe": {**TINY_MOE, "experts": 8}}, "moe: unknown field\\(s\\) experts; known: num_experts"),
    ("llada", {"eos_token_id": [62]}, "`eos_token_id` must be an integer"),
    ("dream", {"eos_token_id": []}, "`eos_token_id` must be a token id or a non-empty list of them, got \\[\\]"),
    ("dream", {"eos_token_id": ["x"]}, "`eos_token_id` must be a list of integers, got \\['x'\\]"),
    ("dream", {"eos_token_id": {"a": 1}}, "`eos_token_id` must be an integer, got {'a': 1}"),
    ("llada2", {"num_key_value_heads": 3}, "must be a multiple of `n_kv_heads`"),
    ("llada2", {"head_dim": "8"}, "`head_dim` must be an integer"),
    ("llada", {"head_dim": 7}, "`head_dim` must be a positive even number \\(RoPE turns pairs\\), got 7"),
    ("llada", {"head_dim": -8}, "`head_dim` must be a positive even number"),
    ("llada", {"head_dim": 2**40}, "parameters"),
    ("llada", {"rope_scaling": "linear"}, "`rope_scaling` must be an object or null, got 'linear'"),
    ("llada", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
     "`rope_scaling` {'factor': 4.0, 'rope_type': 'yarn'} is not supported; supported: rope_type 'linear' with "
     "positive factor; rope_type 'llama3' with positive factor, low_freq_factor, high_freq_factor, "
     "original_max_position_embeddings; null"),
    ("llada", {"rope_scaling": {"rope_type": "linear"}}, "`rope_scaling` {'rope_type': 'linear'} is not supported"),
    ("llada", {"rope_scaling": {"rope_type": "linear", "factor": 2.0, "beta": 1}}, "is not supported; supported"),
    ("llada", {"rope_scaling": {"rope_type": "linear", "factor": NAN}}, "is not supported; supported"),
    ("llada", {"rope_scaling": {"rope_type": "linear", "factor": True}}, "is not supported; supported"),
    ("llada", {"rope_scaling": {"rope_type": "linear", "factor": 0}}, "is not supported; supported"),
    ("llada", {"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4,
                                "original_max_position_embeddings": 8192}},
     "rope_scaling `low_freq_factor` must be less than its `high_freq_factor`"),
    ("llada_moe", {"moe_layer_freq": HUGE}, "`moe_layer_freq` must list 0 or 1 for each of the 3 layers, got 'xx"),
    ("llada_moe", {"num_experts_per_tok": None}, "missing required field\\(s\\) num_experts_per_tok"),
    ("llada", {"activation_type": HUGE}, "`activation_type` is 'xxx.*'; supported: silu"),
    ("llada", {"moe": {**TINY_MOE, "dense_layers": list(range(10**6))}}, r"moe `dense_layers` \[0, 1, 2, .*\] must be"),
    ("llada", {"model_type": HUGE}, "`model_type` is 'xxx"),
    ("llada", {"model_type": ["llada"]}, "`model_type` must be a string or null"),
    ("llada", {"architectures": 5}, "`architectures` must be a list of strings or null, got 5"),
    ("llada", {"n_layers": 10**12, "torch_dtype": ["x"]}, "parameters"),
    ("llada2", {"torch_dtype": "bfloat16", "num_hidden_layers": 1000, "hidden_size": 2**16, "num_attention_heads": 4,
                "head_dim": 2**14, "num_key_value_heads": 4}, r"parameters \(.* in bfloat16\)"),
]


def _write(tmp_path: Path, data: dict, text: str | None = None) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text(text if text is not None else json.dumps(data))
    return root


def _config(family_name: str, change: dict) -> dict:
    data = {**BASES[family_name], **change}
    return {k: v for k, v in data.items() if v is not None or k not in ("embedding_size", "mlp_hidden_size")}


@pytest.mark.parametrize("family_name,change,message", CASES,
                         ids=[f"{f}-{'-'.join(c)}-{i}" for i, (f, c, _) in enumerate(CASES)])
def test_a_hostile_config_json_is_one_line_naming_file_and_field(tmp_path, family_name, change, message):
    root = _write(tmp_path, _config(family_name, change))
    with pytest.raises(ConfigError, match=message) as e:
        read_config(root)
    text = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in text and len(text) < 400, text
    assert text.startswith(str(root / "config.json") + ": "), text


def test_the_bases_are_valid(tmp_path):
    for name, data in BASES.items():
        root = tmp_path / name
        root.mkdir()
        (root / "config.json").write_text(json.dumps(data))
        assert read_config(root).family == name


@pytest.mark.parametrize("text,message", [
    ('{"d_model": 1' + "0" * 5000 + "}", "not valid JSON"),  # json refuses ints of over 4300 digits
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # nested deeper than the parser's recursion
])
def test_config_json_that_json_itself_refuses(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as e:
        read_config(_write(tmp_path, {}, text))
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_info_refuses_a_config_too_large_for_any_machine_at_once(tmp_path, capsys):
    """`llada info` reads config.json before the weights (and only it for a Hub id): 1e12 layers
    are a number in the message, not a loop over them."""
    root = _write(tmp_path, _tiny_llada_config(n_layers=10**12))
    save_file({"model.transformer.wte.weight": torch.zeros(64, 32)}, str(root / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"n_layers=1000000000000, .*1\.3e\+16 parameters"):
        info(str(root))
    assert capsys.readouterr().out == ""


def test_loading_refuses_before_building(tmp_path):
    """A public-layout directory whose config.json was then made hostile: `load` stops at the config."""
    root, _ = _public_dir(tmp_path / "moe", TINY_LLADA_MOE)
    (root / "config.json").write_text(json.dumps({**TINY_LLADA_MOE, "num_experts": 10**6}))
    with pytest.raises(ConfigError, match="experts in each of 2 blocks"):
        llada.load(root)
    (root / "config.json").write_text(json.dumps({**TINY_LLADA_MOE, "qk_layernorm": "false"}))
    with pytest.raises(ConfigError, match="`qk_layernorm` must be true or false"):
        llada.load(root)


@pytest.mark.parametrize("dense_layers", [(), (0, 3), (1, 1)])
def test_the_parameter_count_without_a_loop_matches_the_built_model(dense_layers):
    """`num_params` multiplies instead of looping over blocks; the count is the built model's."""
    moe = MoEConfig(num_experts=6, num_experts_per_tok=2, intermediate_size=16, shared_intermediate_size=8,
                    dense_layers=dense_layers)
    config = ModelConfig(d_model=32, n_layers=5, n_heads=4, n_kv_heads=2, mlp_hidden_size=48, vocab_size=64,
                         mask_token_id=63, eos_token_id=62, pad_token_id=62, bos_token_id=None, moe=moe, qk_norm=True,
                         include_qkv_bias=True, eot_token_id=None)
    with torch.device("meta"):
        model = LLaDAModel(config)
    assert config.num_params() == model.num_params()
    assert config.num_params(active=True) < config.num_params() < MAX_PARAMS


def test_python_api_gets_the_same_checks():
    with pytest.raises(ConfigError, match="`causal` must be true or false"):
        ModelConfig(d_model=32, n_layers=2, n_heads=4, vocab_size=64, mask_token_id=63, causal="no")
    with pytest.raises(ConfigError, match="parameters"):
        ModelConfig(d_model=2**20, n_layers=1000, n_heads=4, vocab_size=64, mask_token_id=63, eos_token_id=62,
                    pad_token_id=62, bos_token_id=None, eot_token_id=None)
    with pytest.raises(ConfigError, match="`num_experts` must be an integer"):
        MoEConfig(num_experts="4", num_experts_per_tok=2, intermediate_size=16)
    with pytest.raises(ConfigError, match=r"config: expected a JSON object, got \[1, 2\]"):
        config_from_json([1, 2])


def test_a_llada2_config_whose_heads_disagree_with_the_fused_weights_is_one_line(tmp_path):
    """`num_key_value_heads: null` reads as many key/value heads as query heads; the directory's fused
    query_key_value holds fewer rows: refused naming the key and both shapes, not a split's RuntimeError."""
    root, _ = _public_dir(tmp_path / "llada2", TINY_LLADA2)
    (root / "config.json").write_text(json.dumps({**TINY_LLADA2, "num_key_value_heads": None}))
    assert read_config(root).n_kv_heads == TINY_LLADA2["num_attention_heads"]  # null reads as 0 does
    with pytest.raises(llada.errors.CheckpointError, match=r"model\.layers\.\d\.attention\.query_key_value\.weight "
                       r"has shape \(64, 32\), but config\.json implies \(96, 32\)") as e:
        llada.load(root)
    assert "\n" not in str(e.value)

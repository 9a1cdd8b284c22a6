"""Model families: the public LLaDA variants and Dream, each from its own config.json shape.

Every config below is written from the public checkpoints' config.json files (field names and,
where the test says so, their values), with tiny sizes where weights are made. Nothing is
downloaded. Comparisons with Dream's own modeling and sampling code run only when `.ref/dream/`
holds a copy of it (see `_dream_reference`); the always-on checks compare against loops written
here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_word_tokenizer
from safetensors.torch import save_file

import llada
from llada.config import ConfigError, ModelConfig, TokenRoles
from llada.families import FAMILIES, config_from_json, detect_family
from llada.likelihood import log_likelihoods
from llada.model import LLaDAModel
from llada.sampling import SamplerOptions, sample, sample_steps

# --------------------------------------------------------------------------------- LLaDA and variants

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
LLADA_VARIANTS = ["GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-1.5"]
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


def _write_dir(root: Path, config: dict, state: dict[str, torch.Tensor], tokenizer, shards: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i::shards]}
        save_file(part, str(root / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    if shards > 1:
        (root / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    tokenizer.save_pretrained(root)
    return root


@pytest.mark.parametrize("repo", LLADA_VARIANTS)
def test_llada_variants_map_to_the_llada_family_at_full_size(repo):
    """Each public LLaDA config.json picks the LLaDA family and reads as the llada-8b shape."""
    assert detect_family(LLADA_8B_CONFIG, repo) == "llada"
    cfg = config_from_json(LLADA_8B_CONFIG, source=repo)
    assert cfg.family == "llada"
    assert cfg == llada.preset("llada-8b", mask_token_id=126336, eos_token_id=126081, pad_token_id=126081,
                               bos_token_id=None, eot_token_id=None, extra=cfg.extra)
    assert cfg.num_params() == 8_015_581_184  # 32 x (4 x 4096^2 + 3 x 4096 x 12288 + 2 x 4096) + 4096 + 2 x 126464 x 4096
    with torch.device("meta"):
        model = FAMILIES[cfg.family].build(cfg)
    assert type(model) is LLaDAModel and model.num_params() == cfg.num_params()
    logits = model(torch.zeros(1, 8, dtype=torch.long, device="meta"))
    assert logits.shape == (1, 8, 126464)


@pytest.mark.parametrize("data,expected", [
    ({"model_type": "llada", "architectures": ["LLaDAModelLM"]}, "llada"),
    ({"architectures": ["LLaDAModelLM"]}, "llada"),
    ({"model_type": "llada"}, "llada"),
    ({}, "llada"),  # our earliest directories named neither
    ({"model_type": "llada", "architectures": ["LLaDAMoEModelLM"]}, "llada_moe"),  # LLaDA-MoE's public config
    ({"model_type": "lladamoe"}, "llada_moe"),  # as dllm rewrites it
    ({"model_type": "llada", "num_experts": 64}, "llada_moe"),
    ({"model_type": "llada2_moe", "architectures": ["LLaDA2MoeModelLM"]}, "llada2"),
    ({"model_type": "Dream"}, "dream"),
])
def test_detect_family_reads_architectures_then_model_type(data, expected):
    assert detect_family(data) == expected


@pytest.mark.parametrize("data,message", [
    ({"model_type": "llada2_moe", "architectures": ["DreamModel"]}, "expected 'Dream' for architectures"),
    ({"model_type": "gpt2"}, "`model_type` is 'gpt2'; expected one of 'llada'"),
    ({"model_type": "gpt2", "architectures": ["LLaDAModelLM"]}, "`model_type` is 'gpt2'; expected 'llada'"),
])
def test_configs_we_cannot_run_say_so(data, message):
    with pytest.raises(ConfigError, match=message):
        detect_family(data, "config.json")


# A variant whose config changes only ids and sizes: a 48-token vocabulary in 64 embedding rows,
# so its mask, EOS, BOS and end-of-turn ids are not the 63, 62, 61, 60 of the other tiny configs.
VARIANT_IDS = {"vocab_size": 48, "mask_token_id": 47, "eos_token_id": 46, "pad_token_id": 46}


@pytest.fixture
def variant_dir(tmp_path) -> Path:
    cfg = _tiny_llada_config(**VARIANT_IDS)
    with torch.device("meta"):
        shape = LLaDAModel(config_from_json(cfg))
    tokenizer = make_word_tokenizer(["the", "cat", "sat", "on", "mat"], vocab_size=48)
    return _write_dir(tmp_path / "variant", cfg, _random_state(shape, lambda n: "model." + n), tokenizer)


def test_a_variant_reads_every_special_id_from_config_and_tokenizer(variant_dir):
    bundle = llada.load(variant_dir)
    assert type(bundle.model) is LLaDAModel
    # mask, EOS and pad from config.json; BOS and end-of-turn from the tokenizer (LLaDA's config names neither)
    assert bundle.config.roles == TokenRoles(mask=47, eos=46, pad=46, bos=45, eot=44)
    prompt = torch.tensor([bundle.tokenizer("the cat sat").input_ids])
    first = next(iter(sample_steps(bundle.model, prompt, SamplerOptions(gen_length=8, block_length=8, steps=8))))
    assert int((first.canvas[0, 3:] == 47).sum()) == 7  # the canvas is masked with the config's id: 1 unmasked
    out = sample(bundle.model, prompt, SamplerOptions(gen_length=8, block_length=8, steps=8))
    answer = out.responses[0]
    assert not bool((answer == 47).any()) and bool((answer < 48).all())  # no mask, no padded embedding row
    estimate = log_likelihoods(bundle.model, [(prompt[0].tolist(), [0, 1])], mc_num=4)[0]
    assert estimate.value < 0


def test_a_variant_saves_and_reloads_with_its_ids(variant_dir, tmp_path):
    bundle = llada.load(variant_dir)
    llada.save(tmp_path / "out", bundle.model, bundle.tokenizer)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == ("llada", ["LLaDAModelLM"])
    assert "family" not in saved  # LLaDA's config.json keeps its own fields only
    assert saved["auto_map"]["AutoModel"] == "GSAI-ML/LLaDA-8B-Base--modeling_llada.LLaDAModelLM"
    again = llada.load(tmp_path / "out")
    assert again.config.roles == bundle.config.roles
    ids = torch.randint(0, 48, (2, 6))
    assert torch.equal(again.model(ids), bundle.model(ids))


def test_every_registered_family_is_named_by_config_json():
    from llada.families import FAMILY_BY_ARCHITECTURE, FAMILY_BY_MODEL_TYPE

    assert set(FAMILY_BY_MODEL_TYPE.values()) == set(FAMILIES) == set(FAMILY_BY_ARCHITECTURE.values())


# --------------------------------------------------------------------------------------------- Dream

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


def _dream_reference_forward(sd: dict[str, torch.Tensor], cfg: dict, ids: torch.Tensor) -> torch.Tensor:
    """Dream's forward as its modeling code defines it, in float64, one row (L,) -> (L, V), written
    here from the architecture with Dream's key names: no shift (row i predicts token i + 1)."""
    w = {k: v.double() for k, v in sd.items()}
    L, D, H, Hkv = ids.shape[0], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps = D // H, cfg["rms_norm_eps"]

    def rms(x, name):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w[name + ".weight"]

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    pos = torch.arange(L, dtype=torch.float64)[:, None]
    angle = pos * cfg["rope_theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # (L, hd/2)
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)

    def rope(x):  # (L, hd), halves rotated as a complex pair (x_j, x_{j + hd/2})
        return x * cos + torch.cat([-x[:, hd // 2:], x[:, :hd // 2]], -1) * sin

    x = w["model.embed_tokens.weight"][ids]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        h = rms(x, p + "input_layernorm")
        q, k, v = (lin(h, p + f"self_attn.{t}_proj") for t in "qkv")
        heads = []
        for i in range(H):
            j = i // (H // Hkv)  # consecutive query heads share a key/value head
            s = rope(q[:, i * hd:(i + 1) * hd]) @ rope(k[:, j * hd:(j + 1) * hd]).T / hd ** 0.5
            heads.append(torch.softmax(s, -1) @ v[:, j * hd:(j + 1) * hd])  # every position sees every other
        x = x + lin(torch.cat(heads, -1), p + "self_attn.o_proj")
        h = rms(x, p + "post_attention_layernorm")
        g = lin(h, p + "mlp.gate_proj")
        x = x + lin(g * torch.sigmoid(g) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    return rms(x, "model.norm") @ w["lm_head.weight"].T


@pytest.fixture
def dream_dir(tmp_path) -> tuple[Path, dict, dict[str, torch.Tensor], dict[str, int]]:
    """A tiny model directory in Dream's public layout: config.json, 3 safetensors shards with Dream's
    key names and their index, and Dream's tokenizer files."""
    from llada.families.dream import checkpoint_key, config_from_json

    root = tmp_path / "dream"
    ids = _write_dream_tokenizer(root)
    cfg = _tiny_dream_config(ids)
    with torch.device("meta"):
        shape = FAMILIES["dream"].build(config_from_json(cfg))
    state = _random_state(shape, checkpoint_key)
    state["lm_head.weight"][cfg["mask_token_id"]] = 0  # the mask's logit is 0, never the largest (see below)
    (root / "config.json").write_text(json.dumps(cfg))
    keys = sorted(state)
    weight_map = {}
    for i in range(3):
        name = f"model-{i + 1:05d}-of-00003.safetensors"
        save_file({k: state[k] for k in keys[i::3]}, str(root / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys[i::3]})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root, cfg, state, ids


def test_dream_7b_shape_from_its_public_config():
    """The public config.json, on the meta device: Qwen2.5-7B's 7.62B parameters, logits for every id."""
    cfg = config_from_json(DREAM_7B_CONFIG, source="Dream-v0-Base-7B/config.json")
    assert cfg.family == "dream" and (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads) == (3584, 28, 28, 4)
    assert (cfg.mlp_hidden_size, cfg.vocab_size, cfg.embedding_size, cfg.rope_theta) == (18944, 152064, 152064, 1e6)
    assert cfg.roles == TokenRoles(mask=151666, eos=151643, pad=151643, bos=151643, eot=None)
    # 28 x (q, k, v, o with q/k/v biases + SwiGLU + 2 norms) + final norm + embedding + head
    per_layer = 3584 * 3584 * 2 + 3584 * 512 * 2 + 3584 + 2 * 512 + 3 * 3584 * 18944 + 2 * 3584
    assert cfg.num_params() == 28 * per_layer + 3584 + 2 * 152064 * 3584 == 7_615_616_512
    with torch.device("meta"):
        model = FAMILIES["dream"].build(cfg)
    assert model.num_params() == 7_615_616_512
    assert model(torch.zeros(1, 8, dtype=torch.long, device="meta")).shape == (1, 8, 152064)
    keys = {FAMILIES["dream"].checkpoint_key(n) for n in model.state_dict()}
    assert {"model.embed_tokens.weight", "model.layers.27.self_attn.q_proj.bias", "model.layers.0.mlp.down_proj.weight",
            "model.layers.0.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight"} <= keys
    assert len(keys) == 28 * 12 + 3


def test_dream_logits_match_a_hand_written_loop_realigned(dream_dir):
    """Ours at position i == Dream's raw output at i - 1 (position 0: its own), against a float64 loop."""
    root, cfg, state, _ = dream_dir
    model = llada.load(root, tokenizer=False).model
    ids = torch.randint(0, cfg["vocab_size"], (2, 9))
    ours = model(ids).double()
    for row in range(2):
        raw = _dream_reference_forward(state, cfg, ids[row])  # (L, V): row i predicts token i + 1
        torch.testing.assert_close(ours[row, 1:], raw[:-1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours[row, 0], raw[0], atol=1e-5, rtol=1e-5)


def test_the_shift_on_a_hand_checked_case():
    """A Dream model that copies its input (identity embedding and head, zero blocks): Dream's raw
    head would return token i at position i; ours returns token i - 1 there, token 0 at position 0."""
    from llada.families.dream import DreamModel

    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, mlp_hidden_size=8, vocab_size=16, mask_token_id=15,
                      eos_token_id=14, pad_token_id=14, bos_token_id=None, eot_token_id=None, include_qkv_bias=True,
                      family="dream")
    model = DreamModel(cfg).eval()
    with torch.no_grad():
        for p in model.transformer.blocks.parameters():
            p.zero_()  # attention and MLP add nothing: the last state is the embedding
        model.transformer.wte.weight.copy_(torch.eye(16))
        model.transformer.ff_out.weight.copy_(torch.eye(16))
    ids = torch.tensor([[3, 7, 1, 5, 9]])
    assert model(ids).argmax(-1).tolist() == [[3, 3, 7, 1, 5]]
    assert model(ids, output_positions=slice(2, 4)).argmax(-1).tolist() == [[7, 1]]
    rows = torch.tensor([[True, False, True, False, True]]).nonzero(as_tuple=True)
    assert model(ids, output_positions=rows).argmax(-1).tolist() == [3, 7, 5]  # (N, V) for (rows, columns)


def test_a_cached_run_reads_the_state_before_it_from_the_cache(dream_dir):
    """A run of positions s..e-1 against a filled KVCache gives the full pass's logits there: position
    s's come from s - 1's state, kept in the cache by the full pass."""
    from llada.model import KVCache

    root, cfg, _, _ = dream_dir
    model = llada.load(root, tokenizer=False).model
    ids = torch.randint(0, cfg["vocab_size"], (2, 12))
    full = model(ids)
    cache = KVCache(model.config, 2, 12, "cpu", model.dtype)
    torch.testing.assert_close(model(ids, kv_cache=cache), full)
    part = model(ids[:, 5:9], kv_cache=cache, cache_position=5)
    torch.testing.assert_close(part, full[:, 5:9], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="pass a KVCache"):  # position 4's state was never computed
        model(ids[:, 5:], kv_cache=KVCache(model.config, 2, 12, "cpu", model.dtype), cache_position=5)


def test_dream_directory_loads_samples_and_scores(dream_dir):
    root, cfg, _, ids = dream_dir
    bundle = llada.load(root)
    assert type(bundle.model).__name__ == "DreamModel" and bundle.config.family == "dream"
    # mask, EOS, pad, BOS from Dream's config.json; end of turn from its tokenizer (<|im_end|>)
    assert bundle.config.roles == TokenRoles(mask=ids["<|mask|>"], eos=ids["<|endoftext|>"],
                                             pad=ids["<|endoftext|>"], bos=ids["<|endoftext|>"], eot=ids["<|im_end|>"])
    assert "Dream" not in type(bundle.tokenizer).__name__  # Qwen2's own class: no remote code ran
    assert bundle.tokenizer.mask_token_id == ids["<|mask|>"]
    prompt = bundle.tokenizer.apply_chat_template([{"role": "user", "content": "the cat"}], add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True)["input_ids"]
    assert ids["<|im_end|>"] in prompt[0].tolist()
    for cache in (None, "prefix", "dual"):
        out = sample(bundle.model, prompt, SamplerOptions(gen_length=8, block_length=4, steps=8, cache=cache))
        assert out.sequences.shape == (1, prompt.shape[1] + 8) and not bool((out.responses == ids["<|mask|>"]).any())
    text = bundle.tokenizer("the cat sat on the mat").input_ids
    estimates = log_likelihoods(bundle.model, [(text[:3], text[3:]), ([], text)], mc_num=8)
    assert all(e.value < 0 and e.stderr >= 0 for e in estimates)


def test_dream_saves_back_in_its_own_layout(dream_dir, tmp_path):
    root, cfg, state, ids = dream_dir
    bundle = llada.load(root)
    out = tmp_path / "saved"
    llada.save(out, bundle.model, bundle.tokenizer, max_shard_size="40KB")
    saved = json.loads((out / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == ("Dream", ["DreamModel"])
    assert {k: saved[k] for k in cfg if k not in ("auto_map", "torch_dtype")} == \
        {k: v for k, v in cfg.items() if k not in ("auto_map", "torch_dtype")}
    assert saved["auto_map"]["AutoModel"] == "Dream-org/Dream-v0-Base-7B--modeling_dream.DreamModel"
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index) == set(state)  # Dream's key names, every one
    again = llada.load(out)
    assert again.config.roles == bundle.config.roles and again.config.family == "dream"
    x = torch.randint(0, cfg["vocab_size"], (2, 7))
    assert torch.equal(again.model(x), bundle.model(x))
    assert again.tokenizer("the cat").input_ids == bundle.tokenizer("the cat").input_ids
    # saved as its transformers class, without the remote-code entry whose file is not shipped
    assert "auto_map" not in json.loads((out / "tokenizer_config.json").read_text())


@pytest.mark.parametrize("change,message", [
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "`rope_scaling` .* is not supported"),
    ({"use_sliding_window": True}, "`use_sliding_window` = True is not supported"),
    ({"mask_token_id": None}, "missing required field\\(s\\) mask_token_id"),
    ({"num_attention_heads": 5}, "must be divisible by `n_heads`"),
])
def test_dream_configs_we_cannot_run_say_so(change, message):
    with pytest.raises(ConfigError, match=message):
        config_from_json({**DREAM_7B_CONFIG, **change}, source="config.json")


@pytest.mark.parametrize("change", [{"qk_norm": True}, {"partial_rotary_factor": 0.5}, {"include_bias": True}])
def test_a_dream_model_refuses_what_its_config_json_cannot_hold(change):
    """Saving would drop these and the reloaded model would differ: refused instead."""
    from llada.families.dream import DreamModel, config_to_json

    config = config_from_json(DREAM_7B_CONFIG).replace(**change)
    with pytest.raises(ConfigError, match="a Dream model cannot have"):
        config_to_json(config)
    with pytest.raises(ConfigError, match="a Dream model cannot have"), torch.device("meta"):
        DreamModel(config)


def test_dream_names_its_sampler_choices_in_our_registry():
    from llada.sampling.remasking import REMASKING, entropy, low_confidence, margin, random

    assert REMASKING["maskgit_plus"] is low_confidence and REMASKING["topk_margin"] is margin
    assert REMASKING["entropy"] is entropy and REMASKING["origin"] is random


@pytest.mark.parametrize("masks,steps,eps", [(16, 16, 1e-3), (16, 2, 0.0), (37, 8, 1e-3), (5, 5, 0.25)])
def test_dream_schedule_counts(masks, steps, eps):
    """Dream's count per step, restated in float32 numpy: floor(m (1 - s/t)) of the m still masked,
    t and s consecutive points of linspace(1, eps, steps + 1), the rest at the last step."""
    import numpy as np

    from llada.sampling.schedule import dream_transfer_count

    times = np.linspace(1, eps, steps + 1, dtype=np.float32)
    left, counts = masks, []
    for i in range(steps):
        want = left if i == steps - 1 else int(np.float32(left) * (np.float32(1) - times[i + 1] / times[i]))
        got = int(dream_transfer_count(torch.tensor([left]), i, steps, eps)[0])
        assert got == want
        counts.append(got)
        left -= got
    assert sum(counts) == masks
    if (masks, steps, eps) == (16, 16, 1e-3):  # one step per token: none first, two last
        assert counts[0] == 0 and counts[-1] == 2


@torch.no_grad()
def test_alg_temp_draws_the_positions(dream_dir):
    root, *_ = dream_dir
    model = llada.load(root, tokenizer=False).model
    prompt = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(0))
    base = SamplerOptions(gen_length=16, block_length=None, steps=8, remasking="entropy", schedule="dream")
    greedy = sample(model, prompt, base).sequences
    assert torch.equal(sample(model, prompt, base.replace(alg_temp=1e-9, seed=1)).sequences, greedy)
    drawn = {tuple(sample(model, prompt, base.replace(alg_temp=10.0, seed=seed)).sequences[0].tolist())
             for seed in range(6)}
    assert len(drawn) > 1 and all(model.config.mask_token_id not in row for row in drawn)
    with pytest.raises(llada.errors.GenerationError, match="fixed steps"):
        base.replace(remasking="low_confidence", threshold=0.9, alg_temp=0.5)


def test_sampled_ranking_draws_without_replacement_by_softmax():
    """Dream's alg_temp: the top 2 of confidence / alg_temp + Gumbel noise is a draw of 2 positions
    without replacement, each by softmax over those left. Exact probabilities, computed by hand."""
    from llada.sampling.core import select_quota
    from llada.sampling.remasking import sampled_ranking

    conf, temp = torch.tensor([1.0, 0.5, 0.0, float("-inf")]), 0.5
    p = torch.softmax(conf / temp, -1).double()
    pairs = [(0, 1), (0, 2), (1, 2)]
    exact = [p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b]) for a, b in pairs]
    g = torch.Generator().manual_seed(0)
    n = 20000
    ranked = sampled_ranking(conf.expand(n, 4), temp, g)
    chosen = select_quota(ranked, torch.full((n,), 2))
    assert not bool(chosen[:, 3].any())  # -inf is never drawn
    for (a, b), want in zip(pairs, exact, strict=True):
        got = float((chosen[:, a] & chosen[:, b]).double().mean())
        assert abs(got - float(want)) < 4 * (float(want) * (1 - float(want)) / n) ** 0.5


# ------------------------------------------------------------ against Dream's own code, when present
# `.ref/dream/` (git-ignored) may hold Dream's public modeling_dream.py, configuration_dream.py and
# generation_utils.py (the files of Dream-org/Dream-v0-Base-7B, e.g. as copied into
# github.com/ZHZisZZ/dllm dllm/pipelines/dream/models/) and an empty __init__.py. Without them
# these tests skip.
REF = Path(__file__).resolve().parents[1] / ".ref" / "dream"


@pytest.fixture
def dream_reference(monkeypatch):
    """Dream's modeling and generation modules, imported from .ref/dream/ as a package."""
    import importlib
    import importlib.util
    import sys

    if not all((REF / f"{m}.py").is_file() for m in ("modeling_dream", "configuration_dream", "generation_utils")):
        pytest.skip(f"{REF} holds no copy of Dream's modeling code")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    def default_rope(config, device=None, **_):  # transformers 5 dropped the "default" entry Dream asks for
        dim = config.hidden_size // config.num_attention_heads
        return 1.0 / config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim), 1.0

    if "default" not in ROPE_INIT_FUNCTIONS:
        monkeypatch.setitem(ROPE_INIT_FUNCTIONS, "default", default_rope)
    if "dream_reference" not in sys.modules:
        spec = importlib.util.spec_from_file_location("dream_reference", REF / "__init__.py",
                                                      submodule_search_locations=[str(REF)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["dream_reference"] = package
        spec.loader.exec_module(package)
    return (importlib.import_module("dream_reference.modeling_dream"),
            importlib.import_module("dream_reference.generation_utils"))


def _reference_model(modeling, cfg: dict, state: dict[str, torch.Tensor]):
    from dream_reference.configuration_dream import DreamConfig

    keep = {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures", "model_type", "torch_dtype")}
    model = modeling.DreamModel(DreamConfig(**keep)).float().eval()
    model.load_state_dict(state, strict=True)
    return model


@torch.no_grad()
def test_dream_logits_match_dreams_own_code(dream_dir, dream_reference):
    root, cfg, state, _ = dream_dir
    ref = _reference_model(dream_reference[0], cfg, state)
    ours = llada.load(root, tokenizer=False).model
    ids = torch.randint(0, cfg["vocab_size"], (2, 11))
    raw = ref(ids).logits
    realigned = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)  # as Dream's generation_utils does
    torch.testing.assert_close(ours(ids), realigned, atol=2e-5, rtol=1e-5)


def _dream_sample(ref, gen_utils, x: torch.Tensor, new: int, mask_id: int, **kw) -> list[torch.Tensor]:
    """Dream's `_sample` at temperature 0, with the canvas after every step."""
    history = []

    def after_step(step, canvas, logits):  # Dream's token hook: also called once before the first step
        if step is not None:
            history.append(canvas.clone())
        return canvas

    config = gen_utils.DreamGenerationConfig(temperature=0.0, max_length=x.shape[1] + new, mask_token_id=mask_id, **kw)
    ref._sample(x, None, config, after_step, lambda step, canvas, logits: logits)
    return history


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@torch.no_grad()
def test_greedy_sampling_matches_dreams_sampler(dream_dir, dream_reference, alg):
    """One block over the answer, temperature 0. With steps=2 and eps=0 Dream's schedule unmasks
    half, then the rest, as ours does: the outputs are equal token for token. With Dream's default
    schedule (eps=1e-3, one step per token, which unmasks 0, 1, ..., 1, 2) every one of its steps is
    ours given the same canvas and count."""
    from llada.sampling.core import select_quota
    from llada.sampling.predict import never_sampled
    from llada.sampling.remasking import REMASKING

    root, cfg, state, ids = dream_dir
    ref = _reference_model(dream_reference[0], cfg, state)
    model, mask = llada.load(root, tokenizer=False).model, cfg["mask_token_id"]
    prompt = torch.randint(0, ids["<|endoftext|>"], (2, 5))
    dream = _dream_sample(ref, dream_reference[1], prompt, 16, mask, steps=2, eps=0.0, alg=alg)[-1]
    ours = sample(model, prompt, SamplerOptions(gen_length=16, block_length=16, steps=2, remasking=alg))
    assert torch.equal(ours.sequences, dream)

    history = _dream_sample(ref, dream_reference[1], prompt, 16, mask, steps=16, eps=1e-3, alg=alg)
    # Dream's own schedule as a sampler option: the whole output, token for token
    ours = sample(model, prompt, SamplerOptions(gen_length=16, block_length=None, steps=16, remasking=alg,
                                                schedule="dream", schedule_eps=1e-3))
    assert torch.equal(ours.sequences, history[-1])
    before = torch.cat([prompt, torch.full((2, 16), mask)], dim=1)
    for after in history:
        masked = before == mask
        logits = model(before)
        x0 = logits.masked_fill(never_sampled(model.config, logits.shape[-1], logits.device), float("-inf")).argmax(-1)
        confidence = REMASKING[alg](logits, x0, None).masked_fill(~masked, float("-inf"))
        count = (masked & (after != mask)).sum(-1)  # what Dream's schedule unmasked at this step
        mine = torch.where(select_quota(confidence, count) & masked, x0, before)
        assert torch.equal(mine, after)
        before = after
    assert not bool((before == mask).any())


def test_dream_through_generate_the_server_and_lm_eval(dream_dir, capsys):
    """`llada generate`, the OpenAI-compatible server and the lm-eval adapter on a Dream directory
    give the library's answer (its preset `dream`: one block, entropy, Dream's schedule)."""
    from fastapi.testclient import TestClient
    from lm_eval.api.instance import Instance

    from llada.cli import main
    from llada.evaluation.harness import LLaDAEvalLM
    from llada.sampling.text import sample_text
    from llada.serve.app import create_app

    root, *_ = dream_dir
    bundle = llada.load(root)
    options = SamplerOptions.from_dict({"preset": "dream", "gen_length": 8, "steps": 8})
    want = sample_text(bundle.model, bundle.tokenizer, "the cat", options)[0].strip()
    assert main(["generate", "the cat", "--model", str(root), "--device", "cpu", "--preset", "dream",
                 "--gen_length", "8", "--steps", "8"]) == 0
    assert capsys.readouterr().out.strip() == want
    with TestClient(create_app(type("Args", (), {"model": bundle.model, "tokenizer": bundle.tokenizer})())) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "the cat"}],
                                                       "preset": "dream", "max_tokens": 8, "steps": 8})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].strip() == want
    lm = LLaDAEvalLM(str(root), device="cpu", preset="dream", steps=8, mc_num=4)
    context = bundle.tokenizer.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=False,
                                                   add_generation_prompt=True)
    answer = lm.generate_until([Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": 8}), 0)])[0]
    assert answer.strip() == want
    (score, _), = lm.loglikelihood([Instance("loglikelihood", {}, ("the cat", " sat on"), 0)])
    assert score < 0

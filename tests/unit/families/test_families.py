"""Model families: the public LLaDA variants, each from its own config.json shape, and the registry
that names every family (Dream's own tests are in test_dream.py, LLaDA-MoE's and LLaDA 2.x's in
test_moe_families.py).

Every config below is written from the public checkpoints' config.json files (field names and,
where the test says so, their values), with tiny sizes where weights are made. Nothing is
downloaded; the checks compare against loops written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_word_tokenizer
from safetensors.torch import save_file
from support.families import (
    LLADA_8B_CONFIG,
    _random_state,
    _tiny_llada_config,
)

import llada
from llada.config import ConfigError, TokenRoles
from llada.families import FAMILIES, config_from_json, detect_family
from llada.likelihood import log_likelihoods
from llada.model import LLaDAModel
from llada.sampling import SamplerOptions, sample, sample_steps

LLADA_VARIANTS = ["GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-1.5"]


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

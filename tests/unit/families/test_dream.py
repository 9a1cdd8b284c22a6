"""Dream: its config, the shifted logits, its schedule and sampler choices, against hand loops and Dream's own code."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT
from support.families import (
    DREAM_7B_CONFIG,
)

import llada
from llada.config import ConfigError, ModelConfig, TokenRoles
from llada.families import FAMILIES, config_from_json
from llada.likelihood import log_likelihoods
from llada.sampling import SamplerOptions, sample


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
REF = ROOT / ".ref" / "dream"


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

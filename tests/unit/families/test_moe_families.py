"""LLaDA-MoE and LLaDA 2.x: their config.json shapes, checkpoint layouts, networks and LLaDA 2.x's
block-diffusion sampler.

The always-on checks compare against what is written here: a float64 loop over tokens and experts
(`loop_logits`), a restatement of LLaDA 2.x's `generate` (`loop_block_diffusion`), and the public
key names and parameter counts worked out by hand. Comparisons with the families' own modeling
and sampling code (github.com/ZHZisZZ/dllm: dllm/pipelines/llada/models/*lladamoe.py,
dllm/pipelines/llada2/models/*) run only when `.ref/moe/` and `.ref/llada2/` hold them and
`.ref/tf457/` holds a transformers 4.57 that they import (`pip install --target .ref/tf457
--no-deps transformers==4.57.1 tokenizers==0.22.1 huggingface-hub==0.36.0`); that code imports
modules transformers 5 removed, so it runs in a subprocess (`tests/unit/families/moe_reference.py`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from support.moe_families import (
    LLADA2_FLASH_CONFIG,
    LLADA2_MINI_CONFIG,
    LLADA_MOE_7B_CONFIG,
    TINY_LLADA2,
    _public_dir,
    assert_same_float32_logits,
)

import llada
from llada.families import FAMILIES, config_from_json, detect_family
from llada.likelihood import log_likelihoods
from llada.sampling import SamplerOptions, sample


@pytest.mark.parametrize("cfg,name,total", [
    # LLaDA2.0-mini, worked out: q/k/v fused 2048 x (16 + 2 x 4) x 128, output 2048 x 2048, two
    # 128-wide QK norms and two norms per layer; layer 0 a dense 3 x 2048 x 5120 MLP; layers 1..19
    # a 256 x 2048 router, 256 experts and one shared expert of 3 x 2048 x 512; embedding and head
    # 157184 x 2048 each; final norm.
    (LLADA2_MINI_CONFIG, "llada2",
     20 * (2048 * 3072 + 2048 * 2048 + 2 * 128 + 2 * 2048) + 3 * 2048 * 5120
     + 19 * (256 * 2048 + 257 * 3 * 2048 * 512) + 2 * 157184 * 2048 + 2048),
    (LLADA2_FLASH_CONFIG, "llada2",
     32 * (4096 * (32 + 8) * 128 + 4096 * 4096 + 2 * 128 + 2 * 4096) + 3 * 4096 * 9216
     + 31 * (256 * 4096 + 257 * 3 * 4096 * 1024) + 2 * 157184 * 4096 + 4096),
    # LLaDA-MoE: 16 layers of attention (4 x 2048^2, two 128-wide QK norms, two norms), a 64 x 2048
    # router and 64 experts of 3 x 2048 x 1024; embedding, head, final norm.
    (LLADA_MOE_7B_CONFIG, "llada_moe",
     16 * (4 * 2048 * 2048 + 2 * 128 + 2 * 2048 + 64 * 2048 + 64 * 3 * 2048 * 1024) + 2 * 157184 * 2048 + 2048),
])
@pytest.mark.slow
def test_full_size_shapes_on_the_meta_device(cfg, name, total):
    """The public config.json: its family, its parameter count (16.3B, 103B, 7.4B), logits for every id."""
    config = config_from_json(cfg, source=f"{name}/config.json")
    assert config.family == name and config.num_params() == total
    with torch.device("meta"):
        model = FAMILIES[name].build(config)
    assert model.num_params() == total
    assert model(torch.zeros(1, 8, dtype=torch.long, device="meta")).shape == (1, 8, 157184)
    print(f"{name}: {total / 1e9:.2f}B parameters")


@pytest.mark.parametrize("cfg,total,active,with_lookup", [
    (LLADA_MOE_7B_CONFIG, 7.0, 1.4, False),  # "LLaDA-MoE-7B-A1B": 7B total, 1.4B active (paper)
    (LLADA2_MINI_CONFIG, 16.0, 1.4, True),  # LLaDA2.0-mini: 16B total, 1.4B active (model card)
    (LLADA2_FLASH_CONFIG, 100.0, 6.1, True),  # LLaDA2.0-flash: 100B total, 6.1B active (model card)
])
def test_active_parameters_match_the_published_figures(cfg, total, active, with_lookup):
    """Active parameters: the router, the 8 chosen experts (and the shared one) per MoE block,
    attention, the head. The published figures count the input embedding differently: LLaDA-MoE's
    1.4B leaves it out (with it: 1.72B), LLaDA 2.x's figures include it (without: 1.11B, 5.51B).
    Measured: 1.40B, 1.43B and 6.15B."""
    config = config_from_json(cfg)
    lookup = 0 if with_lookup else config.embedding_size * config.d_model
    got_active = (config.num_params(active=True) - lookup) / 1e9
    assert abs(got_active - active) < 0.06, got_active  # the published figures are rounded to 0.1B
    assert abs(config.num_params() / 1e9 - total) / total < 0.06
    print(f"{cfg['architectures'][0]}: {config.num_params() / 1e9:.2f}B total, {got_active:.2f}B active")


def test_full_size_reads_the_public_fields():
    mini = config_from_json(LLADA2_MINI_CONFIG)
    assert (mini.head_dim, mini.rotary_dim, mini.n_kv_heads, mini.qk_norm) == (128, 64, 4, True)
    m = mini.moe
    assert (m.num_experts, m.num_experts_per_tok, m.intermediate_size, m.shared_intermediate_size) == (256, 8, 512, 512)
    assert (m.dense_layers, m.score, m.norm_topk, m.scaling, m.groups, m.topk_groups, m.bias) == \
        ((0,), "sigmoid", True, 2.5, 8, 4, "selection")
    assert (mini.mask_token_id, mini.eos_token_id, mini.pad_token_id) == (156895, 156892, 156892)
    moe = config_from_json(LLADA_MOE_7B_CONFIG)
    assert detect_family(LLADA_MOE_7B_CONFIG) == "llada_moe"  # model_type "llada": the architecture decides
    assert (moe.moe.dense_layers, moe.moe.score, moe.moe.norm_topk, moe.moe.bias) == ((), "softmax", False, None)
    assert (moe.mask_token_id, moe.rotary_dim, moe.qk_norm) == (156895, 128, True)


@pytest.mark.parametrize("change,message", [
    ({"use_bias": True}, "use_bias"),
    ({"head_dim": 64}, "head_dim"),
    ({"score_function": "softmax"}, "score_function"),
    ({"n_group": 3}, "cannot form 3 groups"),
    ({"num_experts_per_tok": 300}, "exceeds"),
])
def test_llada2_configs_we_cannot_run_say_so(change, message):
    with pytest.raises(llada.config.ConfigError, match=message):
        config_from_json({**LLADA2_MINI_CONFIG, **change}, source="config.json")


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def _rope(x: torch.Tensor, pos: int, rotary: int, theta: float) -> torch.Tensor:
    """Rotate the first `rotary` dims of one head vector at one position, pair (i, i + rotary/2)."""
    out = x.clone()
    half = rotary // 2
    for i in range(half):
        angle = pos * theta ** (-2 * i / rotary)
        a, b = x[i], x[i + half]
        out[i], out[i + half] = a * math.cos(angle) - b * math.sin(angle), b * math.cos(angle) + a * math.sin(angle)
    return out


def _swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    return down @ (torch.nn.functional.silu(gate @ x) * (up @ x))


def _experts(x: torch.Tensor, sd: dict, p: str, cfg: dict, family_name: str) -> torch.Tensor:
    """One token's mixture of experts, as each family's modeling code describes its router."""
    logits = sd[p + "mlp.gate.weight"] @ x
    k, n = cfg["num_experts_per_tok"], cfg["num_experts"]
    if family_name == "llada2":
        scores = torch.sigmoid(logits)
        ranked = scores + sd[p + "mlp.gate.expert_bias"]
        size = n // cfg["n_group"]
        groups = sorted(range(cfg["n_group"]), key=lambda gi: -sum(sorted(ranked[gi * size:(gi + 1) * size].tolist())[-2:]))
        eligible = [e for gi in groups[:cfg["topk_group"]] for e in range(gi * size, (gi + 1) * size)]
        chosen = sorted(eligible, key=lambda e: -float(ranked[e]))[:k]
        weights = [float(scores[e]) for e in chosen]
        weights = [w / sum(weights) * cfg["routed_scaling_factor"] for w in weights]
        shared = "mlp.shared_experts."
        expert = "mlp.experts.{}."
    else:
        probs = torch.softmax(logits, -1)
        if cfg["moe_router_enable_expert_bias"]:
            probs = probs + sd[p + "mlp.expert_bias"]
        chosen = sorted(range(n), key=lambda e: -float(probs[e]))[:k]
        weights = [float(probs[e]) for e in chosen]
        shared = "shared_expert." if cfg["shared_expert_intermediate_size"] else None
        expert = "mlp.experts.{}."
    out = sum(w * _swiglu(x, *(sd[p + expert.format(e) + f"{m}.weight"] for m in ("gate_proj", "up_proj", "down_proj")))
              for e, w in zip(chosen, weights, strict=True))
    if shared:
        out = out + _swiglu(x, *(sd[p + shared + f"{m}.weight"] for m in ("gate_proj", "up_proj", "down_proj")))
    return out


def loop_logits(state: dict[str, torch.Tensor], cfg: dict, ids: list[int], family_name: str,
                block: int | None = None) -> torch.Tensor:
    """Logits (T, V) of one sequence, token by token and head by head in float64, from the public
    checkpoint; `block`: block-causal attention (a query sees keys of its own block and before)."""
    sd = {k: v.double() for k, v in state.items()}
    d, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, T = d // H, cfg["rms_norm_eps"], len(ids)
    rotary = int(hd * cfg["partial_rotary_factor"])
    llada2 = family_name == "llada2"
    h = [sd["model.word_embeddings.weight" if llada2 else "model.embed_tokens.weight"][t] for t in ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = [_rms(v, sd[p + "input_layernorm.weight"], eps) for v in h]
        if llada2:
            q_w, k_w, v_w = sd[p + "attention.query_key_value.weight"].split([d, Hkv * hd, Hkv * hd])
            o_w, qn, kn = sd[p + "attention.dense.weight"], "attention.query_layernorm", "attention.key_layernorm"
        else:
            q_w, k_w, v_w = (sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv")
            o_w, qn, kn = sd[p + "self_attn.o_proj.weight"], "self_attn.q_norm", "self_attn.k_norm"
        heads = []
        for t in range(T):
            out = []
            for a in range(H):
                g = a // (H // Hkv)
                q = _rope(_rms((q_w @ x[t])[a * hd:(a + 1) * hd], sd[p + qn + ".weight"], eps), t, rotary, cfg["rope_theta"])
                seen = [s for s in range(T) if block is None or s // block <= t // block]
                ks = [_rope(_rms((k_w @ x[s])[g * hd:(g + 1) * hd], sd[p + kn + ".weight"], eps), s, rotary,
                            cfg["rope_theta"]) for s in seen]
                w = torch.softmax(torch.stack([q @ k for k in ks]) / math.sqrt(hd), 0)
                out.append(sum(w[j] * (v_w @ x[s])[g * hd:(g + 1) * hd] for j, s in enumerate(seen)))
            heads.append(o_w @ torch.cat(out))
        h = [h[t] + heads[t] for t in range(T)]
        dense = llada2 and i < cfg["first_k_dense_replace"] or not llada2 and cfg["moe_layer_freq"][i] == 0
        for t in range(T):
            y = _rms(h[t], sd[p + "post_attention_layernorm.weight"], eps)
            h[t] = h[t] + (_swiglu(y, *(sd[p + f"mlp.{m}.weight"] for m in ("gate_proj", "up_proj", "down_proj")))
                           if dense else _experts(y, sd, p, cfg, family_name))
    return torch.stack([sd["lm_head.weight"] @ _rms(v, sd["model.norm.weight"], eps) for v in h])


@torch.no_grad()
def test_logits_match_a_float64_loop_over_tokens_and_experts(public_dir):
    name, root, cfg, state = public_dir
    model = llada.load(root, tokenizer=False).model
    assert model.config.family == name
    ids = [5, 1, 62, 7, 0, 63, 3]
    want = loop_logits(state, cfg, ids, name)
    got = model.double()(torch.tensor([ids]))[0]
    model.float()
    # norms, RoPE and the router compute in float32 whatever the weights' dtype (LLaDA 2.x's code routes
    # in float32 too; LLaDA-MoE's routes in the model's dtype: in bfloat16 the two differ by rounding)
    assert (got - want).abs().max() < 1e-5


@torch.no_grad()
def test_block_causal_attention_matches_the_loop(tmp_path):
    """Blocks of 3 over 7 positions, in double precision."""
    root, state = _public_dir(tmp_path / "d", TINY_LLADA2)
    m = llada.load(root, tokenizer=False).model.double()
    ids = [5, 1, 62, 7, 0, 63, 3]
    want = loop_logits(state, TINY_LLADA2, ids, "llada2", block=3)
    got = m(torch.tensor([ids]), block_size=3)[0]
    assert (got - want).abs().max() < 1e-5
    # a position's logits do not depend on later blocks
    other = m(torch.tensor([ids[:6] + [9]]), block_size=3)[0]
    assert torch.equal(other[:6], got[:6]) and not torch.equal(other[6], got[6])


def test_public_layout_loads_samples_scores_and_saves_back(public_dir, tmp_path):
    name, root, cfg, state = public_dir
    bundle = llada.load(root)
    assert bundle.config.eot_token_id == bundle.tokenizer.convert_tokens_to_ids("<|role_end|>")
    prompt = torch.tensor([[0, 1, 2, 3, 4]])
    for options in (SamplerOptions(gen_length=8, block_length=4, steps=8),
                    SamplerOptions(gen_length=8, block_length=4, cache="dual", threshold=0.5),
                    SamplerOptions.from_dict({"preset": "llada2", "gen_length": 8, "block_length": 4})):
        out = sample(bundle.model, prompt, options)
        assert out.sequences.shape == (1, 13) and not bool((out.responses == 63).any())
    scores = log_likelihoods(bundle.model, [([0, 1], [2, 3]), ([], [4, 5, 6])], mc_num=8)
    assert all(math.isfinite(s.value) and s.value < 0 for s in scores)

    llada.save(tmp_path / "ours", bundle.model, bundle.tokenizer)  # our directory, in the family's layout
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    for key in ("architectures", "num_experts", "hidden_size"):
        assert saved[key] == cfg[key]
    from safetensors import safe_open
    reloaded = {}
    for f in (tmp_path / "ours").glob("model*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            reloaded.update({k: fh.get_tensor(k) for k in fh.keys()})
    assert sorted(reloaded) == sorted(state)
    assert all(torch.equal(reloaded[k], state[k].float()) for k in state)
    again = llada.load(tmp_path / "ours", tokenizer=False).model
    ids = torch.tensor([[3, 4, 5, 63, 63]])
    assert_same_float32_logits(again(ids), bundle.model(ids))
    options = SamplerOptions(gen_length=8, block_length=4, steps=8)
    assert torch.equal(sample(again, prompt, options).sequences, sample(bundle.model, prompt, options).sequences)


def test_loaded_weights_own_aligned_storage(public_dir):
    """Every weight is its own fresh allocation, as a tensor made on the spot is: not a view into a
    safetensors file's bytes or into the fused query_key_value it was split from, whose alignment
    differs between layouts and may send a CPU's kernels down another path."""
    model = llada.load(public_dir[1], tokenizer=False).model
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name
        assert t.data_ptr() % 64 == 0, name


def test_lora_adapts_attention_only_in_moe_blocks(public_dir):
    from llada.runtime import apply_lora

    name, root, *_ = public_dir
    model = llada.load(root, tokenizer=False).model
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in apply_lora(model, 2).named_parameters() if ".lora_A" in n}
    assert adapted and not any(".moe." in n for n in adapted)
    assert any(n.endswith("q_proj") for n in adapted)


@torch.no_grad()
def loop_block_diffusion(model, prompt: list[int], gen_length: int, block: int, steps: int, threshold: float,
                         mask: int) -> list[int]:
    """LLaDA 2.x's `generate` restated for one row at temperature 0: blocks from position 0, each
    step the block's logits with nothing after the block, every prediction above the threshold if
    at least the step's quota (block // steps, the first block % steps one more) are, else the
    quota most confident."""
    total = -(-(len(prompt) + gen_length) // block) * block
    x = prompt + [mask] * (total - len(prompt))
    quota = [block // steps + (i < block % steps) for i in range(steps)]
    for b in range(len(prompt) // block, total // block):
        s, e = b * block, (b + 1) * block
        for i in range(steps):
            masked = [j for j in range(s, e) if x[j] == mask]
            if not masked:
                break
            probs = torch.softmax(model(torch.tensor([x[:e]]), block_size=block)[0].double(), -1)
            probs[:, mask] = -1.0  # never predict the mask itself (its probability still counts in the rest)
            best = {j: (int(probs[j].argmax()), float(probs[j].max())) for j in masked}
            above = [j for j in masked if best[j][1] > threshold]
            k = min(quota[i], len(masked))
            keep = above if len(above) >= k else sorted(masked, key=lambda j: -best[j][1])[:k]
            for j in keep:
                x[j] = best[j][0]
    return x[len(prompt):len(prompt) + gen_length]


@pytest.mark.parametrize("block,steps,threshold,prompt_length", [
    (4, 4, 0.95, 5), (4, 2, 1.0, 4), (8, 8, 0.2, 3), (4, 4, 0.5, 9)])
@torch.no_grad()
def test_block_diffusion_matches_a_restatement_of_llada2_generate(public_dir, block, steps, threshold, prompt_length):
    name, root, cfg, _ = public_dir
    model = llada.load(root, tokenizer=False).model
    prompt = list(range(prompt_length))
    want = loop_block_diffusion(model, prompt, 8, block, steps, threshold, cfg["mask_token_id"])
    for cache in (None, "prefix", "dual"):
        options = SamplerOptions(gen_length=8, block_length=block, steps=steps * 8 // block, threshold=threshold,
                                 block_causal=True, cache=cache)
        out = sample(model, torch.tensor([prompt]), options)
        assert out.responses[0].tolist() == want, cache
        if cache is not None:  # the finished blocks' keys/values are reused, not recomputed each step
            assert out.stats.cached_forwards > 0


@torch.no_grad()
def loop_block_editing(model, prompt: list[int], gen_length: int, block: int, threshold: float, editing: float,
                       max_post_steps: int, mask: int) -> list[int]:
    """LLaDA 2.1's `generate` restated for one row at temperature 0: one token (or all above the
    threshold) per step, and every decoded answer token of the block whose prediction changed
    with confidence above `editing` replaced; after the last mask, at most max_post_steps steps,
    until one edits nothing."""
    total = -(-(len(prompt) + gen_length) // block) * block
    x = prompt + [mask] * (total - len(prompt))
    for b in range(len(prompt) // block, total // block):
        s, e = b * block, (b + 1) * block
        post = 0
        while True:
            masked = [j for j in range(s, e) if x[j] == mask]
            if not masked:
                post += 1
                if post > max_post_steps:
                    break
            probs = torch.softmax(model(torch.tensor([x[:e]]), block_size=block)[0].double(), -1)
            probs[:, mask] = -1.0
            best = {j: (int(probs[j].argmax()), float(probs[j].max())) for j in range(s, e)}
            above = [j for j in masked if best[j][1] > threshold]
            keep = above if len(above) >= 1 else sorted(masked, key=lambda j: -best[j][1])[:1]
            edits = [j for j in range(max(s, len(prompt)), e)
                     if x[j] != mask and best[j][1] > editing and best[j][0] != x[j]]
            for j in keep + edits:
                x[j] = best[j][0]
            if not masked and not edits:
                break
    return x[len(prompt):len(prompt) + gen_length]


@pytest.mark.parametrize("block,threshold,editing,prompt_length", [(4, 0.9, 0.3, 5), (8, 0.2, 0.1, 3), (4, 0.5, 0.2, 8)])
@torch.no_grad()
def test_token_editing_matches_a_restatement_of_llada21_generate(tmp_path, block, threshold, editing, prompt_length):
    cfg = TINY_LLADA2
    root, state = _public_dir(tmp_path / "d", cfg)
    model = llada.load(root, tokenizer=False).model
    with torch.no_grad():  # a confident head, so that thresholds and edits take effect
        model.transformer.ff_out.weight.mul_(8)
    prompt = list(range(prompt_length))
    want = loop_block_editing(model, prompt, 8, block, threshold, editing, 16, cfg["mask_token_id"])
    for cache in (None, "prefix"):
        options = SamplerOptions(gen_length=8, block_length=block, threshold=threshold, block_causal=True,
                                 editing_threshold=editing, cache=cache)
        assert sample(model, torch.tensor([prompt]), options).responses[0].tolist() == want


@torch.no_grad()
def test_token_editing_changes_answers(tmp_path):
    """Over a few prompts, editing replaces some decoded tokens (the comparisons above are not vacuous)."""
    root, _ = _public_dir(tmp_path / "d", TINY_LLADA2)
    model = llada.load(root, tokenizer=False).model
    model.transformer.ff_out.weight.mul_(8)
    prompts = torch.arange(40).remainder(60).view(8, 5)
    base = SamplerOptions(gen_length=8, block_length=4, threshold=0.5, block_causal=True)
    plain = sample(model, prompts, base).responses
    edited = sample(model, prompts, base.replace(editing_threshold=0.2)).responses
    assert int((plain != edited).sum()) > 0


@torch.no_grad()
def test_block_diffusion_batches_rows_of_one_length(public_dir):
    _, root, *_ = public_dir
    model = llada.load(root, tokenizer=False).model
    prompts = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 0, 1]])
    options = SamplerOptions.from_dict({"preset": "llada2", "gen_length": 8, "block_length": 4})
    together = sample(model, prompts, options).responses
    alone = torch.cat([sample(model, p[None], options).responses for p in prompts])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("gen_length,block", [(8, 16), (10, 4), (5, 8)])
@torch.no_grad()
def test_block_diffusion_keeps_its_block_whatever_the_length(public_dir, gen_length, block):
    """The block is the model's attention pattern: an answer shorter than a block, or not a whole
    number of blocks, keeps it (LLaDA 2.x's generate takes any gen_length), through `fitted` too."""
    _, root, cfg, _ = public_dir
    model = llada.load(root, tokenizer=False).model
    model.transformer.ff_out.weight.mul_(4)
    prompt = [0, 1, 2, 3, 4]
    options = SamplerOptions(gen_length=gen_length, block_length=block, threshold=0.95, block_causal=True)
    assert options.block_size == block and options.fitted(gen_length).block_size == block
    want = loop_block_diffusion(model, prompt, gen_length, block, block, 0.95, cfg["mask_token_id"])
    assert sample(model, torch.tensor([prompt]), options).responses[0].tolist() == want


@torch.no_grad()
def test_block_diffusion_compares_probabilities_whatever_ranks(tmp_path):
    """Threshold and editing read the prediction's probability (LLaDA 2.x's x0_p), not the remasking
    score: with no probability above them, random or entropy ranking decode as the quota alone."""
    root, _ = _public_dir(tmp_path / "d", TINY_LLADA2)
    model = llada.load(root, tokenizer=False).model
    prompts = torch.arange(40).remainder(60).view(8, 5)
    probs = torch.softmax(model(torch.cat([prompts, torch.full((8, 8), 63)], 1)), -1).max(-1).values
    assert float(probs.max()) < 0.9  # an unsure head: nothing passes 0.9
    for remasking in ("random", "entropy", "margin"):
        base = SamplerOptions(gen_length=8, block_length=4, block_causal=True, remasking=remasking, seed=3)
        plain = sample(model, prompts, base).responses
        assert torch.equal(plain, sample(model, prompts, base.replace(threshold=0.95)).responses), remasking
        if remasking != "random":  # (editing's extra step per block would draw more random numbers)
            edited = sample(model, prompts, base.replace(threshold=0.95, editing_threshold=0.9)).responses
            assert torch.equal(plain, edited), remasking


def test_threshold_with_entropy_ranking_is_refused_outside_block_diffusion():
    with pytest.raises(llada.errors.GenerationError, match="entropy"):
        SamplerOptions(threshold=0.9, remasking="entropy")


def test_block_causal_refuses_the_factor_rule():
    with pytest.raises(llada.errors.GenerationError, match="block_causal"):
        SamplerOptions(block_causal=True, factor=1.0)


REF = ROOT / ".ref"


SCRIPT = Path(__file__).resolve().parent / "moe_reference.py"


def _reference_available() -> bool:
    return (REF / "tf457" / "transformers").is_dir() and (REF / "moe" / "modeling_lladamoe.py").is_file() \
        and (REF / "llada2" / "modeling_llada2_moe.py").is_file()


@pytest.mark.skipif(not _reference_available(), reason=".ref holds no copy of the families' modeling code")
def test_logits_and_greedy_samples_match_the_families_own_code(tmp_path):
    """Their code builds tiny random models and saves them; we load each directory and compare
    logits, and LLaDA 2.0's and 2.1's `generate` against ours at temperature 0, each in 9 settings
    x 2 caches."""
    env = {**os.environ, "PYTHONPATH": f"{REF / 'tf457'}{os.pathsep}{REF}"}
    for name in ("llada_moe", "llada2"):
        subprocess.run([sys.executable, str(SCRIPT), name, str(tmp_path / name)], check=True, env=env,
                       cwd=REF, capture_output=True, timeout=600)
        model = llada.load(tmp_path / name, tokenizer=False).model
        ref = torch.load(tmp_path / name / "ref.pt")
        with torch.no_grad():
            got = model(ref["ids"])
        difference = (got - ref["logits"]).abs().max().item()
        print(f"{name}: max |logits - reference| = {difference:.2e}")
        assert difference < 1e-5
    agree = total = 0
    model = llada.load(tmp_path / "llada2", tokenizer=False).model
    for case in torch.load(tmp_path / "llada2" / "ref_generate.pt"):
        want = case["answer"][0]
        for cache in (None, "prefix"):
            options = SamplerOptions(gen_length=16, block_length=case["block"], steps=case["steps"] * 16 // case["block"],
                                     threshold=case["threshold"], block_causal=True, cache=cache)
            got = sample(model, case["prompt"], options).responses[0][:len(want)]
            agree += int((got == want).sum())
            total += len(want)
    print(f"llada2 generate: {agree} of {total} tokens equal")
    assert agree == total
    agree = total = 0
    for case in torch.load(tmp_path / "llada2" / "ref_editing.pt"):  # LLaDA 2.1's generate, token editing
        want = case["answer"][0]
        for cache in (None, "prefix"):
            options = SamplerOptions(gen_length=16, block_length=case["block"], threshold=case["threshold"],
                                     block_causal=True, editing_threshold=case["editing"], cache=cache)
            got = sample(model, case["prompt"], options).responses[0][:len(want)]
            agree += int((got == want).sum())
            total += len(want)
    print(f"llada2.1 generate with editing: {agree} of {total} tokens equal")
    assert agree == total


REF_GENERATE = REF / "ref_generate.py"


@pytest.mark.skipif(not REF_GENERATE.is_file(), reason=".ref holds no copy of LLaDA's generate.py")
@torch.no_grad()
def test_llada_moe_greedy_sampling_equals_llada_generate(public_dir):
    """LLaDA-MoE samples with LLaDA's own sampler (its model card calls generate.py's `generate`
    with mask_id 156895): ours equals it token for token on the MoE network."""
    import importlib.util

    name, root, cfg, _ = public_dir
    if name != "llada_moe":
        pytest.skip("LLaDA 2.x samples by block diffusion (see the tests above)")
    spec = importlib.util.spec_from_file_location("llada_ref_generate", REF_GENERATE)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    model = llada.load(root, tokenizer=False).model
    wrapped = type("Wrapped", (), {"__call__": lambda self, x, **kw: type("O", (), {"logits": model(x)})(),
                                   "device": model.device})()
    prompt = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 0, 1]])
    agree = total = 0
    for steps, block in ((16, 8), (8, 16), (16, 4)):
        want = ref.generate(wrapped, prompt, steps=steps, gen_length=16, block_length=block, temperature=0.0,
                            mask_id=cfg["mask_token_id"])
        got = sample(model, prompt, SamplerOptions(gen_length=16, steps=steps, block_length=block)).sequences
        assert torch.equal(got[:, :5], want[:, :5])
        agree += int((got[:, 5:] == want[:, 5:]).sum())  # the generated tokens
        total += want[:, 5:].numel()
    print(f"llada_moe vs generate.py: {agree} of {total} tokens equal")
    assert agree == total


@torch.no_grad()
def test_transformers_auto_classes_open_each_family(public_dir, tmp_path):
    """After `import llada`, AutoModelForCausalLM opens a LLaDA-MoE directory (model_type "llada",
    shared with LLaDA-8B) and a LLaDA 2.x one without remote code: the family's weights, not fresh
    ones; `generate` is `llada.sample`; save_pretrained writes the family's layout back."""
    from transformers import AutoModelForCausalLM

    name, root, cfg, state = public_dir
    model = AutoModelForCausalLM.from_pretrained(root)
    ours = llada.load(root, tokenizer=False).model
    ids = torch.tensor([[0, 1, 2, 3, 63, 63]])
    assert model.model.config.family == name and torch.equal(model(ids).logits, ours(ids))
    prompt = torch.tensor([[0, 1, 2]])
    want = sample(ours, prompt, SamplerOptions(gen_length=4, steps=4, block_length=4)).sequences
    got = model.generate(prompt, max_new_tokens=4, steps=4, block_length=4)
    from llada.hf import pad_after_stop
    assert torch.equal(got, pad_after_stop(want, 3, ours.config.roles))
    model.generation_config.max_new_tokens, model.generation_config.threshold = 7, 0.5
    model.save_pretrained(tmp_path / "saved")
    again = llada.load(tmp_path / "saved", tokenizer=False).options
    assert (again.gen_length, again.threshold) == (7, 0.5)  # the model's generation config, saved with it
    from safetensors import safe_open
    keys = set()
    for f in (tmp_path / "saved").glob("model*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            keys |= set(fh.keys())
    assert keys == set(state)


@torch.no_grad()
def test_llada21_model_type_opens_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    root, _ = _public_dir(tmp_path / "d", {**TINY_LLADA2, "model_type": "llada21_moe"})
    model = AutoModelForCausalLM.from_pretrained(root)
    ids = torch.tensor([[0, 1, 2, 63]])
    assert model.model.config.family == "llada2"
    assert torch.equal(model(ids).logits, llada.load(root, tokenizer=False).model(ids))

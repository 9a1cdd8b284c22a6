"""The mask predictor against an independent float64 reference written here (plain attention)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from support.model import reference_forward

from llada.model import KVCache, LLaDAModel


def _randomise_norms(model: LLaDAModel) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))


@pytest.mark.parametrize("overrides", [
    {},
    {"n_kv_heads": 4},                      # plain multi-head attention
    {"n_kv_heads": 1},                      # multi-query
    {"weight_tying": True},
    {"include_bias": True},
    {"include_qkv_bias": True, "rope_theta": 10000.0},
    {"learned_positions": True},            # ours: a learned absolute position embedding beside RoPE
    {"head_dim": 16},                       # heads of their own size: q/k/v wider than d_model (Qwen3's)
    {"head_dim": 4, "n_kv_heads": 1, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
])
def test_forward_matches_float64_reference(overrides):
    cfg = tiny_config(**overrides)
    model = LLaDAModel(cfg)
    _randomise_norms(model)
    if cfg.include_bias or cfg.include_qkv_bias:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(std=0.1)
    ids = torch.randint(0, cfg.vocab_size, (2, 11))
    logits = model(ids)
    assert logits.shape == (2, 11, cfg.embedding_size)
    for row in range(2):
        ref = reference_forward(model.state_dict(), cfg, ids[row])
        torch.testing.assert_close(logits[row].double(), ref, atol=1e-5, rtol=1e-5)


def test_padding_mask_equals_unpadded_rows():
    """A left-padded batch gives each row the logits it has alone (positions shift with RoPE-invariance)."""
    cfg = tiny_config()
    model = LLaDAModel(cfg)
    a = torch.randint(0, 50, (7,))
    b = torch.randint(0, 50, (4,))
    pad = cfg.pad_token_id
    batch = torch.stack([a, torch.cat([torch.full((3,), pad), b])])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    out = model(batch, attention_mask=mask)
    torch.testing.assert_close(out[0], model(a[None])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, 3:], model(b[None])[0], atol=1e-5, rtol=1e-5)
    # and against the float64 reference with the padded keys hidden
    ref = reference_forward(model.state_dict(), cfg, batch[1], keep=mask[1].bool())
    torch.testing.assert_close(out[1, 3:].double(), ref[3:], atol=1e-5, rtol=1e-5)


def test_bidirectional_every_position_sees_the_future():
    cfg = tiny_config()
    model = LLaDAModel(cfg)
    ids = torch.randint(0, 50, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 50
    diff = (model(ids) - model(changed)).abs().amax(-1)[0]
    assert (diff[:-1] > 0).all(), "earlier positions must depend on a later token"


def test_causal_baseline_ignores_the_future():
    cfg = tiny_config(causal=True)
    model = LLaDAModel(cfg)
    ids = torch.randint(0, 50, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 50
    diff = (model(ids) - model(changed)).abs().amax(-1)[0]
    assert torch.all(diff[:-1] == 0) and diff[-1] > 0


def _filled_cache(model: LLaDAModel, ids: torch.Tensor, **kwargs) -> KVCache:
    """A KVCache as long as `ids`, filled by one full pass over them."""
    cache = KVCache(model.config, ids.shape[0], ids.shape[1], "cpu", torch.float64)
    model(ids, kv_cache=cache, **kwargs)
    return cache


def _scramble(cache: KVCache, positions: slice) -> None:
    """Noise in every layer's keys and values at `positions`: what a run there must write itself."""
    for k, v in cache.layers:
        k[:, :, positions] = torch.randn_like(k[:, :, positions])
        v[:, :, positions] = torch.randn_like(v[:, :, positions])


@pytest.mark.parametrize("causal", [False, True])
def test_cached_keys_values_reproduce_the_full_forward(causal):
    """Running a slice against the keys/values of the rest (as the full pass cached them; the
    slice's own positions scrambled first) equals running everything at once."""
    cfg = tiny_config(causal=causal)
    model = LLaDAModel(cfg).double()
    ids = torch.randint(0, 50, (2, 12))
    full = model(ids)
    # prefix cache: positions 0..4 cached, 5..11 run
    cache = _filled_cache(model, ids)
    _scramble(cache, slice(5, 12))
    out = model(ids[:, 5:], kv_cache=cache, cache_position=5)
    torch.testing.assert_close(out, full[:, 5:])
    if not causal:
        # dual cache: 0..4 and 8..11 cached, the block 5..7 run with its own positions
        cache = _filled_cache(model, ids)
        _scramble(cache, slice(5, 8))
        pos = torch.arange(5, 8).expand(2, 3)
        out = model(ids[:, 5:8], kv_cache=cache, cache_position=5, position_ids=pos)
        torch.testing.assert_close(out, full[:, 5:8])


def test_own_head_size_and_llama3_rope_scaling_through_a_cache():
    """Heads of 16 dimensions on a 32-wide model, with Llama 3's RoPE scaling: the cache holds keys
    of that size, and a prefix-cached run equals the full one; without the scaling the logits differ."""
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 16}
    model = LLaDAModel(tiny_config(head_dim=16, rope_scaling=llama3)).double()
    assert model.transformer.blocks[0].q_proj.weight.shape == (4 * 16, 32)
    assert model.transformer.blocks[0].attn_out.weight.shape == (32, 4 * 16)
    ids = torch.randint(0, 50, (2, 12))
    full = model(ids)
    cache = _filled_cache(model, ids)
    assert cache.layers[0][0].shape == (2, 2, 12, 16)
    _scramble(cache, slice(5, 12))
    torch.testing.assert_close(model(ids[:, 5:], kv_cache=cache, cache_position=5), full[:, 5:])
    plain = LLaDAModel(tiny_config(head_dim=16)).double()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(ids), full)


def test_learned_positions_tell_apart_positions_that_rope_alone_cannot():
    """Every position holding the same token (an all-masked answer): with RoPE alone each query
    averages the same values, so every position gets the same logits; the learned position
    embedding gives each its own."""
    ids = torch.full((1, 9), 7)
    for learned in (False, True):
        logits = LLaDAModel(tiny_config(learned_positions=learned)).double()(ids)[0]
        spread = (logits - logits[:1]).abs().max().item()
        assert (spread > 1e-3) if learned else (spread < 1e-9)


def test_learned_positions_follow_the_position_ids_through_a_cache():
    """Prefix and dual cache with learned positions: the run slice gets the embedding rows of its
    own positions, so the cached pass equals the full one; a position past the table is refused."""
    model = LLaDAModel(tiny_config(learned_positions=True, max_sequence_length=16)).double()
    ids = torch.randint(0, 50, (2, 12))
    full = model(ids)
    cache = _filled_cache(model, ids)
    torch.testing.assert_close(model(ids[:, 5:], kv_cache=cache, cache_position=5), full[:, 5:])
    cache = _filled_cache(model, ids)
    pos = torch.arange(5, 8).expand(2, 3)
    torch.testing.assert_close(model(ids[:, 5:8], kv_cache=cache, cache_position=5, position_ids=pos), full[:, 5:8])
    with pytest.raises(ValueError, match=r"positions 0\.\.16 are outside the learned position embedding's 0\.\.15"):
        model(torch.randint(0, 50, (1, 17)))


@pytest.mark.parametrize("causal", [False, True])
def test_shifted_prediction_moves_each_state_one_position_right(causal):
    """With `shifted_prediction` position i's logits are the unshifted model's at i - 1 (position 0
    keeps its own), in every output form; a cached run from s > 0 reads s - 1's state from the
    cache, and without one is refused. `kind`: a shifted causal model is a mask predictor."""
    plain = LLaDAModel(tiny_config(causal=causal)).double()
    shifted = LLaDAModel(tiny_config(causal=causal, shifted_prediction=True)).double()
    shifted.load_state_dict(plain.state_dict())
    assert (plain.config.kind, shifted.config.kind) == ("autoregressive" if causal else "diffusion", "diffusion")
    ids = torch.randint(0, 50, (2, 10))
    want = plain(ids)
    want = torch.cat([want[:, :1], want[:, :-1]], dim=1)
    torch.testing.assert_close(shifted(ids), want)
    torch.testing.assert_close(shifted(ids, output_positions=slice(3, 7)), want[:, 3:7])
    rows = (torch.tensor([0, 1, 1]), torch.tensor([0, 4, 9]))
    torch.testing.assert_close(shifted(ids, output_positions=rows), want[rows])
    cache = _filled_cache(shifted, ids)
    torch.testing.assert_close(shifted(ids[:, 4:8], kv_cache=cache, cache_position=4), want[:, 4:8])
    with pytest.raises(ValueError, match="come from position 3 .* pass a KVCache"):
        shifted(ids[:, 4:], kv_cache=KVCache(shifted.config, 2, 10, "cpu", torch.float64), cache_position=4)


@pytest.mark.parametrize("causal", [False, True])
def test_static_cache_is_written_in_place_and_reproduces_the_full_forward(causal):
    """A KVCache filled by one full pass, then a slice re-run into it, equals running everything at
    once; its buffers are the same tensors throughout (nothing is concatenated or reallocated)."""
    model = LLaDAModel(tiny_config(causal=causal)).double()
    ids = torch.randint(0, 50, (2, 12))
    am = torch.ones_like(ids)
    am[1, :3] = 0  # a left-padded row
    full = model(ids, attention_mask=am)
    cache = KVCache(model.config, 2, 12, "cpu", torch.float64)
    ptrs = [k.data_ptr() for k, _ in cache.layers]
    torch.testing.assert_close(model(ids, attention_mask=am, kv_cache=cache), full)
    if causal:  # one position at a time, left to right, as the AR sampler does
        cache = KVCache(model.config, 2, 12, "cpu", torch.float64)
        ptrs = [k.data_ptr() for k, _ in cache.layers]
        steps = [model(ids[:, :6], attention_mask=am, kv_cache=cache)]
        steps += [model(ids[:, i:i + 1], attention_mask=am, kv_cache=cache, cache_position=i) for i in range(6, 12)]
        torch.testing.assert_close(torch.cat(steps, 1), full)
    else:  # the dual cache: re-run the block 5..7 against everything else as cached
        changed = ids.clone()
        changed[:, 5:8] = torch.randint(0, 50, (2, 3))
        out = model(changed[:, 5:8], attention_mask=am, kv_cache=cache, cache_position=5)
        k_full = _filled_cache(model, changed, attention_mask=am).layers
        torch.testing.assert_close(cache.layers[0][0][:, :, 5:8], k_full[0][0][:, :, 5:8])  # written in place
        torch.testing.assert_close(cache.layers[0][0][:, :, 8:], _filled_cache(model, ids, attention_mask=am).layers[0][0][:, :, 8:])
        # (the first layer's block keys depend only on the block's tokens; what the rest sees is as cached)
        assert out.shape == (2, 3, model.config.embedding_size)
    assert [k.data_ptr() for k, _ in cache.layers] == ptrs


def test_output_positions_slices_logits():
    cfg = tiny_config()
    model = LLaDAModel(cfg)
    ids = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(model(ids, output_positions=slice(3, 6)), model(ids)[:, 3:6])


def test_bfloat16_forward_close_to_float32():
    cfg = tiny_config()
    model = LLaDAModel(cfg)
    ids = torch.randint(0, 50, (2, 9))
    ref = model(ids)
    out = model.to(torch.bfloat16)(ids)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_gradients_flow_to_every_parameter():
    model = LLaDAModel(tiny_config())
    model(torch.randint(0, 50, (2, 6))).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_activation_checkpointing_same_gradients():
    cfg = tiny_config()
    model = LLaDAModel(cfg).train()
    ids = torch.randint(0, 50, (2, 6))
    model(ids).square().mean().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing = True
    model(ids).square().mean().backward()
    for a, p in zip(ref, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a)


def test_param_count_closed_form():
    for overrides in ({}, {"weight_tying": True}, {"include_bias": True}, {"include_qkv_bias": True},
                      {"head_dim": 16, "include_bias": True, "qk_norm": True}, {"head_dim": 4, "n_kv_heads": 1}):
        cfg = tiny_config(**overrides)
        assert LLaDAModel(cfg).num_params() == cfg.num_params()


def test_replace_keeps_a_head_size_of_its_own_and_rederives_the_default():
    assert tiny_config().replace(n_heads=8).head_dim == 4  # d_model 32 / 8 heads
    assert tiny_config(head_dim=16).replace(n_heads=8).head_dim == 16
    assert tiny_config().replace(head_dim=16).head_dim == 16

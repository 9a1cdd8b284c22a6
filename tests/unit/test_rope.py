"""RoPE (llada/rope.py) against transformers' own rotary embedding, and what a transformers
config.json (4.x or 5.x) says about RoPE in our fields."""

from __future__ import annotations

import pytest
import torch

from llada.config import ROPE_SCALINGS, ModelConfig
from llada.rope import SCALED_FREQUENCIES, inverse_frequencies, rope_cos_sin, rope_fields

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 512}


def test_every_scaling_the_config_accepts_has_its_frequencies():
    assert set(SCALED_FREQUENCIES) == set(ROPE_SCALINGS)


@pytest.mark.parametrize("scaling", [None, {"rope_type": "linear", "factor": 4.0}, LLAMA3],
                         ids=["default", "linear", "llama3"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_cos_sin_equal_transformers_rotary_embedding(scaling, head_dim):
    """Our (B, 1, T, head_dim) cos and sin against LlamaRotaryEmbedding's (B, T, head_dim) for the
    same rope_parameters, at positions inside and far past Llama 3's original context."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    theta = 500000.0
    params = {**(scaling or {"rope_type": "default"}), "rope_theta": theta}
    hf = LlamaRotaryEmbedding(LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=head_dim,
                                          rope_parameters=params, max_position_embeddings=8192))
    positions = torch.tensor([[0, 1, 7, 100, 511, 2047, 8191], [3, 5, 9, 513, 600, 4000, 5]])
    want_cos, want_sin = hf(torch.zeros(1), positions)
    config = ModelConfig(d_model=256, n_heads=4, head_dim=head_dim, rope_theta=theta, rope_scaling=scaling)
    cos, sin = rope_cos_sin(positions, config.rotary_dim, theta, config.rope_scaling)
    torch.testing.assert_close(cos[:, 0], want_cos, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin[:, 0], want_sin, atol=1e-6, rtol=0)


def test_llama3_keeps_high_frequencies_divides_low_ones_and_blends_between():
    """By wavelength 2 pi / f against the original context L = 512: under L / 4 kept, over L / 1
    divided by the factor 8, and between the two a blend strictly between both."""
    plain, scaled = inverse_frequencies(128, 500000.0), inverse_frequencies(128, 500000.0, LLAMA3)
    wavelength = 2 * torch.pi / plain
    short, long = wavelength < 512 / 4, wavelength > 512
    middle = ~short & ~long
    assert short.any() and long.any() and middle.any()
    torch.testing.assert_close(scaled[short], plain[short])
    torch.testing.assert_close(scaled[long], plain[long] / 8)
    assert bool(((scaled[middle] < plain[middle]) & (scaled[middle] > plain[middle] / 8)).all())
    torch.testing.assert_close(inverse_frequencies(64, 1e4, {"rope_type": "linear", "factor": 2.0}),
                               inverse_frequencies(64, 1e4) / 2)


@pytest.mark.parametrize("data,key,fields", [
    ({}, None, {}),
    ({"rope_theta": 1e6, "rope_scaling": None}, None, {"rope_theta": 1e6}),
    # transformers 4.x: Llama 3.1's config.json, and an older linear one typed by `type`
    ({"rope_theta": 5e5, "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
     "rope_scaling", {"rope_theta": 5e5, "rope_scaling": {
         "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 8192}}),
    ({"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}},
     "rope_scaling", {"rope_theta": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    # transformers 5.x: everything in rope_parameters (its own rope_theta first), `type` kept beside
    ({"rope_theta": 1.0, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
     "rope_parameters", {"rope_theta": 1e6, "rope_scaling": None}),
    ({"rope_parameters": {"factor": 2.0, "rope_theta": 1e3, "rope_type": "linear", "type": "linear"}},
     "rope_parameters", {"rope_theta": 1e3, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    ({"rope_scaling": "x"}, "rope_scaling", {"rope_scaling": "x"}),  # for ModelConfig to refuse
])
def test_rope_fields_reads_both_transformers_layouts(data, key, fields):
    assert rope_fields(data) == (key, fields)

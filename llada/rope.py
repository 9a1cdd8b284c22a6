"""Rotary position embedding (RoPE): the frequencies, their scaling, and the rotation.

Computed in float32, "rotate half" layout (the two halves of each head are the real and imaginary
parts), positions given explicitly so that a slice of the sequence can be run. The frequencies are
transformers' (`modeling_rope_utils.py`): theta^(-2i / rotary_dim) for i < rotary_dim / 2, then
rescaled by a `ModelConfig.rope_scaling` of one of the types below, each written out from its
`_compute_*_parameters` function. Both types leave the cos and sin unscaled (attention factor 1).

`rope_fields` reads what a transformers config.json (4.x or 5.x) says about RoPE in our fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor


def linear_frequencies(inv_freq: Tensor, scaling: Mapping[str, Any]) -> Tensor:
    """Position interpolation: every frequency divided by `factor` (as if positions were divided by
    it). transformers' `_compute_linear_scaling_rope_parameters`."""
    return inv_freq / scaling["factor"]


def llama3_frequencies(inv_freq: Tensor, scaling: Mapping[str, Any]) -> Tensor:
    """Llama 3.1's scaling, by wavelength 2 pi / f against the context it was trained on
    (`original_max_position_embeddings`, L): wavelengths under L / high_freq_factor are kept,
    those over L / low_freq_factor are divided by `factor`, and those between interpolated
    smoothly, s = (L / wavelength - low) / (high - low), f' = (1 - s) f / factor + s f.
    transformers' `_compute_llama3_parameters`, in the same order of operations."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


# `ModelConfig.rope_scaling["rope_type"]` -> the rescaling of the frequencies (rotary_dim / 2,). The
# keys each type takes are checked by the config (`config.ROPE_SCALINGS`, the same names).
SCALED_FREQUENCIES: dict[str, Callable[[Tensor, Mapping[str, Any]], Tensor]] = {
    "linear": linear_frequencies,
    "llama3": llama3_frequencies,
}


def inverse_frequencies(rotary_dim: int, theta: float, scaling: Mapping[str, Any] | None = None,
                        device: torch.device | str | None = None) -> Tensor:
    """The (rotary_dim / 2,) float32 angular frequencies theta^(-2i / rotary_dim), rescaled by
    `scaling` (a `ModelConfig.rope_scaling`) when one is given."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, device=device, dtype=torch.float32) / rotary_dim))
    return inv_freq if scaling is None else SCALED_FREQUENCIES[scaling["rope_type"]](inv_freq, scaling)


def rope_cos_sin(position_ids: Tensor, rotary_dim: int, theta: float,
                 scaling: Mapping[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """cos and sin of shape (B, 1, T, rotary_dim) in float32 for integer positions (B, T), at the
    frequencies of `inverse_frequencies` (partial rotary included)."""
    inv_freq = inverse_frequencies(rotary_dim, theta, scaling, position_ids.device)
    freqs = position_ids.float()[..., None] * inv_freq  # (B, T, rotary_dim/2)
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, rotary_dim)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first rotary_dim = cos.shape[-1] dimensions of (B, H, T, head_dim) by the angles
    (the rest pass through: partial rotary); computed in float32, returned in x's dtype."""
    x32 = x.float()
    rot, rest = x32[..., :cos.shape[-1]], x32[..., cos.shape[-1]:]
    x1, x2 = rot.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return torch.cat((rot * cos + rotated * sin, rest), dim=-1).to(x.dtype)


def rope_fields(data: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """What a transformers config dict says about RoPE, in ModelConfig's fields: the key that holds
    its scaling ("rope_scaling", "rope_parameters" or None) and the values of `rope_theta`,
    `partial_rotary_factor` and `rope_scaling` it gives. transformers 4.x keeps `rope_theta` beside
    a `rope_scaling` object typed by `rope_type` (or `type`); 5.x moves all into `rope_parameters`.
    As in transformers, `rope_scaling` comes before `rope_parameters`, and a value inside them
    before one beside them. A type "default" (or none) is no scaling (None). The values are not
    checked here: ModelConfig checks them."""
    key = next((k for k in ("rope_scaling", "rope_parameters") if data.get(k) is not None), None)
    params = data.get(key)
    if key is not None and not isinstance(params, Mapping):  # ModelConfig says what it must be
        return key, {"rope_scaling": params}
    params = dict(params or {})
    places = [params, data, data.get("rope_parameters") if isinstance(data.get("rope_parameters"), Mapping) else {}]
    out: dict[str, Any] = {}
    for name in ("rope_theta", "partial_rotary_factor"):
        value = next((place[name] for place in places if place.get(name) is not None), None)
        params.pop(name, None)
        if value is not None:
            out[name] = value
    kind = params.pop("rope_type", None) or params.get("type") or "default"
    params.pop("type", None)
    if key is not None:
        out["rope_scaling"] = None if kind == "default" else {"rope_type": kind, **params}
    return key, out

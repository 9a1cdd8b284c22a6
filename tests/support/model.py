"""An independent float64 forward of the LLaDA network (plain attention), the reference the model and
checkpoint tests compare against."""

from __future__ import annotations

import math

import torch


def reference_forward(sd: dict[str, torch.Tensor], cfg, ids: torch.Tensor,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    """LLaDA's forward in float64 from a state dict keyed like the checkpoints, one row at a time.

    keep: (L,) bool, which key positions are visible (padding mask) — None for all.
    """
    w = {k: v.double() for k, v in sd.items()}
    L = ids.shape[0]
    hd, H, Hkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    # RoPE scaling: only "linear" here (every angle divided by its factor)
    assert cfg.rope_scaling is None or cfg.rope_scaling["rope_type"] == "linear"
    slow = 1.0 if cfg.rope_scaling is None else cfg.rope_scaling["factor"]

    def rms(x, name):
        y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps) * w[name + ".weight"]
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def rope(x, pos):  # x: (L, hd); rotate pairs (i, i + hd/2) by angle pos * theta^(-2i/hd) / factor
        out = x.clone()
        for i in range(hd // 2):
            ang = pos * cfg.rope_theta ** (-2 * i / hd) / slow
            a, b = x[:, i], x[:, i + hd // 2]
            out[:, i] = a * torch.cos(ang) - b * torch.sin(ang)
            out[:, i + hd // 2] = b * torch.cos(ang) + a * torch.sin(ang)
        return out

    pos = torch.arange(L, dtype=torch.float64)
    x = w["transformer.wte.weight"][ids]
    if "transformer.wpe.weight" in w:  # learned absolute positions 0..L-1, added to the token embeddings
        x = x + w["transformer.wpe.weight"][:L]
    for n in range(cfg.n_layers):
        p = f"transformer.blocks.{n}"
        h = rms(x, p + ".attn_norm")
        q, k, v = lin(h, p + ".q_proj"), lin(h, p + ".k_proj"), lin(h, p + ".v_proj")
        heads = []
        for head in range(H):
            kvh = head // (H // Hkv)  # grouped-query: consecutive query heads share a kv head
            qh = rope(q[:, head * hd:(head + 1) * hd], pos)
            kh = rope(k[:, kvh * hd:(kvh + 1) * hd], pos)
            vh = v[:, kvh * hd:(kvh + 1) * hd]
            scores = qh @ kh.T / math.sqrt(hd)  # no causal mask
            if keep is not None:
                scores[:, ~keep] = float("-inf")
            heads.append(torch.softmax(scores, dim=-1) @ vh)
        x = x + lin(torch.cat(heads, dim=-1), p + ".attn_out")
        h = rms(x, p + ".ff_norm")
        gate = lin(h, p + ".ff_proj")
        x = x + lin(gate * torch.sigmoid(gate) * lin(h, p + ".up_proj"), p + ".ff_out")
    x = rms(x, "transformer.ln_f")
    if cfg.weight_tying:
        return x @ w["transformer.wte.weight"].T
    return lin(x, "transformer.ff_out")

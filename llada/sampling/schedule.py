"""How many tokens to unmask at each step of a block.

LLaDA's noise schedule is linear in t, so the expected number of tokens revealed per step is
constant: a block with n masks and s steps reveals n // s per step, the first n % s steps one more.
"""

from __future__ import annotations

import torch
from torch import Tensor


def num_transfer_tokens(masked_count: Tensor, steps: int) -> Tensor:
    """(B,) mask counts -> (B, steps) tokens to reveal per step; each row sums to its count."""
    base = (masked_count // steps)[:, None]  # (B, 1)
    remainder = (masked_count % steps)[:, None]
    step = torch.arange(steps, device=masked_count.device)[None]  # (1, steps)
    return base + (step < remainder).long()

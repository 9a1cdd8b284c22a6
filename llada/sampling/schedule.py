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


def fit_blocks(gen_length: int, block_length: int, steps: int | None = None) -> tuple[int, int, int]:
    """The documented rounding for a requested length: block_length capped at gen_length,
    gen_length rounded up to whole blocks, steps (default: one per token) up to a multiple of the
    number of blocks.

    Returns (gen_length, block_length, steps); the answer still ends at its first EOS.
    """
    block = min(block_length, gen_length)
    gen = -(-gen_length // block) * block
    blocks = gen // block
    steps = gen if steps is None else steps
    return gen, block, max(blocks, -(-steps // blocks) * blocks)

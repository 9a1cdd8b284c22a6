"""How many tokens to unmask at each step of a block.

LLaDA's noise schedule is linear in t, so the expected number of tokens revealed per step is
constant: a block with n masks and s steps reveals n // s per step, the first n % s steps one more
("even"). Dream's sampler (its generation_utils.py) walks t from 1 down to eps in s equal steps and
at the step from t to s reveals floor(m (1 - s/t)) of the m positions still masked, all of them at
the last step ("dream"): with eps = 1e-3 and one step per token, none at the first step and two
at the last.
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


SCHEDULES = ("even", "dream")


def dream_transfer_count(masked_now: Tensor, step: int, steps: int, eps: float) -> Tensor:
    """Dream's count for step `step` (0-based) of `steps`: floor(m (1 - s/t)) of the m = masked_now
    (B,) positions still masked, t and s consecutive points of linspace(1, eps, steps + 1), in
    float32 as Dream computes them; every one of them at the last step."""
    if step == steps - 1:
        return masked_now
    times = torch.linspace(1, eps, steps + 1, device=masked_now.device)
    return (masked_now.float() * (1 - times[step + 1] / times[step])).long()


def fit_blocks(gen_length: int, block_length: int, steps: int | None = None) -> tuple[int, int, int]:
    """The documented rounding for a requested length: block_length capped at gen_length,
    gen_length rounded up to whole blocks, steps (default: one per token) capped at one per token
    and rounded up to a multiple of the number of blocks.

    Returns (gen_length, block_length, steps); the answer still ends at its first EOS.
    """
    block = min(block_length, gen_length)
    gen = -(-gen_length // block) * block
    blocks = gen // block
    steps = gen if steps is None else min(steps, gen)
    return gen, block, max(blocks, -(-steps // blocks) * blocks)

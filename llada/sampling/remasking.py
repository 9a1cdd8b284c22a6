"""Remasking strategies: how confident the sampler is in each predicted token.

At every step the sampler predicts all masked tokens, keeps the most confident and re-masks the
rest. A strategy maps the step's logits (B, T, V) and the predicted ids (B, T) to a confidence
(B, T); higher is kept first. Register a new one with `@register("name")`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Strategy = Callable[[Tensor, Tensor, "torch.Generator | None"], Tensor]
REMASKING: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    def add(fn: Strategy) -> Strategy:
        REMASKING[name] = fn
        return fn

    return add


@register("low_confidence")
def low_confidence(logits: Tensor, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The probability of the predicted token (the paper's default). The softmax runs in the
    logits' dtype, as in the reference sampler, so bf16 models rank positions the same way."""
    return F.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)


@register("random")
def random(logits: Tensor, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform noise: keep a random subset (the paper's ablation)."""
    gen_device = generator.device if generator is not None else x0.device
    return torch.rand(x0.shape, generator=generator, device=gen_device).to(x0.device)


@register("margin")
def margin(logits: Tensor, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Top-1 minus top-2 probability: sure when the runner-up is far behind."""
    top2 = F.softmax(logits.float(), dim=-1).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


@register("entropy")
def entropy(logits: Tensor, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Negative entropy of the predictive distribution: sure when it is peaked."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return (logp.exp() * logp).sum(-1)

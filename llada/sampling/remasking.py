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


# ----------------------------------------------------------------------------------- Dream's names
# Dream's sampler (its generation_utils.py, `alg=`) ranks in four ways. Each agrees with a strategy
# above and is registered as that strategy under Dream's name, so `remasking="maskgit_plus"` picks
# the positions Dream's sampler picks:
#     maskgit_plus   probability of the predicted token   = low_confidence
#     topk_margin    top-1 minus top-2 probability        = margin
#     entropy        negative entropy                     = entropy (Dream adds 1e-10 inside the log)
#     origin         a random subset                      = random
# They agree exactly at temperature 0. At temperature > 0 Dream ranks by the distribution it samples
# from (logits / temperature, after top-p / top-k) where these see the logits as they are, as
# LLaDA's sampler ranks; and `origin` unmasks each masked position independently with probability
# 1 - s/t, so its count per step varies, where `random` keeps the schedule's count.
REMASKING["maskgit_plus"] = low_confidence
REMASKING["topk_margin"] = margin
REMASKING["origin"] = random


def sampled_ranking(confidence: Tensor, alg_temp: float, generator: torch.Generator | None = None) -> Tensor:
    """Dream's `alg_temp` > 0: rather than keeping the k most confident positions, draw k of them
    without replacement, each draw with probabilities softmax(confidence / alg_temp) over those left.
    The k largest of confidence / alg_temp + Gumbel noise are exactly such a draw (the Gumbel-top-k
    trick), so a sampler that ranks by this (B, T) float64 tensor instead of `confidence` applies it;
    -inf (a position never to be chosen) stays -inf."""
    gen_device = generator.device if generator is not None else confidence.device
    u = torch.rand(confidence.shape, dtype=torch.float64, generator=generator, device=gen_device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300))).to(confidence.device)
    return confidence.double() / alg_temp + gumbel

"""One step's predictions: from the logits of the current block to a token and a confidence per position.

    logits (B, T, V) ──▶ cut (filter_logits, at temperature > 0) ──▶ Gumbel-max draw ──▶ x0 (B, T)
                     └─▶ remasking score of each x0 (remasking.py) ────────────────────▶ confidence (B, T)

`Predictor` reads its options from `SamplerOptions` where it uses them; the reverse process
(`core.py`) and the autoregressive baseline share the cut (`filter_logits`) and the ids no sampler
may pick (`never_sampled`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llada.config import ModelConfig
from llada.sampling.options import SamplerOptions
from llada.sampling.remasking import REMASKING


def add_gumbel_noise(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """Gumbel-max sampling in float64 (low precision hurts quality): argmax of the result is a
    sample from softmax(logits / temperature); temperature 0 returns the logits (greedy)."""
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    gen_device = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape, dtype=torch.float64, generator=generator, device=gen_device).to(logits.device)
    return logits.exp() / (-torch.log(u)) ** temperature


def filter_logits(logits: Tensor, options: SamplerOptions) -> Tensor:
    """`logits` (..., V) with every token outside the options' top_k most probable, then outside
    the nucleus of probability top_p, then below min_p times the most probable's probability, set
    to -inf, in the order LLaDA 2.x's sampler (and transformers) applies them; Dream's applies
    top_p first, which is the same when only one is given. The nucleus is the shortest prefix of
    the descending order whose probabilities sum to more than top_p (the most probable token is
    always kept, by min_p too: transformers' MinPLogitsWarper). Temperature is the caller's: pass
    logits / temperature. With none set (or top_p 1) the logits are returned as they are."""
    top_k, top_p, min_p = options.top_k, options.top_p, options.min_p
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        reached = ordered.softmax(-1).cumsum(-1) > top_p  # (..., V) in descending order
        beyond = torch.cat([torch.zeros_like(reached[..., :1]), reached[..., :-1]], -1)  # the tokens after it
        logits = logits.masked_fill(torch.zeros_like(beyond).scatter_(-1, order, beyond), float("-inf"))
    if min_p:  # p_i < min_p p_max, as log-probability differences (no softmax needed)
        logits = logits.masked_fill(logits < logits.amax(-1, keepdim=True) + math.log(min_p), float("-inf"))
    return logits


def never_sampled(config: ModelConfig, width: int, device: torch.device) -> Tensor:
    """(width,) bool: the output columns no sampler may pick: the mask id (a canvas must end with
    no mask left) and the padded embedding rows past vocab_size (ids the tokenizer cannot decode).
    Confidences still come from the full softmax, so rankings are the reference sampler's."""
    never = torch.zeros(width, dtype=torch.bool, device=device)
    never[config.vocab_size:] = True
    never[config.mask_token_id] = True
    return never


class Predictor:
    """One step's predictions from the block's logits (B, T, V): x0 (B, T), the sampled (or greedy)
    token at each position, and its confidence (B, T) by the remasking rule, at every position.

    Reads temperature, top_k, top_p, tempered_confidence, remasking, logits_eos_inf and
    confidence_eos_eot_inf; rules that compare a confidence against a number (threshold, factor,
    editing_threshold: not `options.fixed_steps`) get it in float64."""

    def __init__(self, config: ModelConfig, options: SamplerOptions, generator: torch.Generator | None = None):
        self.cfg, self.options, self.generator = config, options, generator
        self.score, self.exact = REMASKING[options.remasking], not options.fixed_steps
        self.tempered = options.tempered_confidence and options.temperature > 0
        self.never: Tensor | None = None
        self.sampled: Tensor | None = None  # cut or tempered: the last step's distribution sampled from (logits)

    def probability(self, logits: Tensor, x0: Tensor, confidence: Tensor) -> Tensor:
        """The probability (B, T) of each prediction under the step's logits, in float64: what block
        diffusion's threshold and editing rules compare (as LLaDA 2.x's `x0_p`), whatever ranks; with
        tempered_confidence, under the distribution it was sampled from. `confidence` (this step's,
        from `__call__`) already is it under low-confidence remasking."""
        low_confidence = REMASKING["low_confidence"]
        if self.score is low_confidence and self.exact and not self.options.confidence_eos_eot_inf:
            return confidence
        return low_confidence((self.sampled if self.tempered else logits).double(), x0, None)

    def __call__(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        cfg, o = self.cfg, self.options
        if o.logits_eos_inf:
            logits[..., cfg.eos_token_id] = float("-inf")
        if self.never is None:
            self.never = never_sampled(cfg, logits.shape[-1], logits.device)
        kept = scored = logits
        if self.tempered or o.truncated:
            # the distribution sampled from: softmax(logits / temperature) cut to top_k, then top_p
            # (temperature first, as LLaDA 2.x and Dream apply it: it changes which tokens make top_p)
            sampled = filter_logits(logits.double() / o.temperature, o)
            kept = logits.masked_fill(sampled == float("-inf"), float("-inf"))
            # LLaDA's generate.py ranks by the plain softmax; LLaDA 2.x and Dream by this distribution
            scored = sampled if self.tempered else logits
            self.sampled = sampled
        x0 = add_gumbel_noise(kept.masked_fill(self.never, float("-inf")), o.temperature, self.generator).argmax(-1)
        if o.confidence_eos_eot_inf:  # an EOS/EOT prediction is kept last (App. B.4)
            scored = scored.clone()
            scored[..., cfg.eos_token_id] = float("-inf")
            if cfg.eot_token_id is not None:
                scored[..., cfg.eot_token_id] = float("-inf")
        # Fixed steps rank in the logits' dtype, as LLaDA's generate.py does (bf16 parity); rules that
        # compare against a number (threshold, factor, editing) do it in float64 as Fast-dLLM does: a
        # bf16 confidence would read 0.9 as 0.8984375.
        return x0, self.score(scored.double() if self.exact else scored, x0, self.generator)

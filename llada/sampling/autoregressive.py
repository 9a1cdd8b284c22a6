"""Left-to-right decoding for the autoregressive baseline (`config.kind == "autoregressive"`).

Only for comparisons with the diffusion model: greedy or temperature sampling with a key/value
cache, prompts left padded with an attention mask, rows stopping at EOS / end-of-turn. It yields
the same `StepState`s as the reverse process (one token per step, the positions still to come
shown as masks), so every consumer of `llada.sample_steps` streams it the same way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import torch
from torch import Tensor

from llada.errors import GenerationError
from llada.model import KVCache, LLaDAModel
from llada.sampling.core import GenerateOutput, GenerateStats, StepState
from llada.sampling.options import SamplerOptions
from llada.sampling.predict import filter_logits, never_sampled


@torch.no_grad()
def autoregressive_steps(model: LLaDAModel, input_ids: Tensor, options: SamplerOptions,
                         attention_mask: Tensor | None = None,
                         generator: torch.Generator | None = None) -> Iterator[StepState]:
    """Append `options.gen_length` tokens to each row of `input_ids` (B, P), one per step, reading
    only the options marked autoregressive (`AUTOREGRESSIVE_OPTIONS`: the length, temperature, the
    cuts of `filter_logits`, seed); finished rows pad with EOS. Call through `llada.sample`."""
    cfg = model.config
    roles = cfg.roles
    if cfg.kind != "autoregressive":
        raise GenerationError("autoregressive decoding needs a causal model (the AR baseline); "
                              "llada.sample picks the reverse process for a diffusion model")
    B, P = input_ids.shape
    gen_length, device = options.gen_length, model.device
    ids = input_ids.to(device)
    am = torch.ones_like(ids) if attention_mask is None else attention_mask.to(device).long()
    positions = (am.cumsum(1) - 1).clamp(min=0)
    stops = torch.tensor(roles.stops, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    canvas = torch.cat([ids, torch.full((B, gen_length), roles.mask, dtype=torch.long, device=device)], 1)
    stats = GenerateStats(tokens=B * gen_length)

    # one static cache for prompt + answer: each step writes its position in place (keys ahead of a
    # query are never attended by a causal model, so the unwritten ones need no mask)
    kv = KVCache(cfg, B, P + gen_length, device, model.dtype)
    am = torch.cat([am, torch.ones(B, gen_length, dtype=am.dtype, device=device)], 1)
    logits = model(ids, am, positions, output_positions=slice(-1, None), kv_cache=kv)
    stats.full_forwards += 1
    next_pos = positions[:, -1:] + 1
    never = never_sampled(cfg, logits.shape[-1], device)
    for i in range(gen_length):
        scores = logits[:, -1].double().masked_fill(never, float("-inf"))  # (B, V): text ids only
        if options.temperature > 0:
            probs = torch.softmax(filter_logits(scores / options.temperature, options), -1)
            token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            token = scores.argmax(-1)
        token = torch.where(done, roles.eos, token)
        canvas[:, P + i] = token
        done |= torch.isin(token, stops)
        stats.steps += 1
        moved = torch.zeros_like(canvas, dtype=torch.bool)
        moved[:, P + i] = True
        yield StepState(canvas, moved, 0, i, P, stats)
        if i + 1 == gen_length or bool(done.all()):
            break
        logits = model(token[:, None], am, next_pos, kv_cache=kv, cache_position=P + i)
        next_pos = next_pos + 1
        stats.cached_forwards += 1
    canvas[:, P:] = torch.where(canvas[:, P:] == roles.mask, roles.eos, canvas[:, P:])  # rows all stopped early
    yield StepState(canvas, torch.zeros_like(canvas, dtype=torch.bool), 0, stats.steps - 1, P, stats, final=True)


def generate_autoregressive(model: LLaDAModel, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                            gen_length: int = SamplerOptions.gen_length,
                            temperature: float = SamplerOptions.temperature,
                            generator: torch.Generator | None = None) -> GenerateOutput:
    """Append `gen_length` tokens to each row of `input_ids` (B, P) left to right; finished rows
    pad with EOS. Returns sequences (B, P + gen_length)."""
    options = SamplerOptions(gen_length=gen_length, block_length=None, temperature=temperature)
    state = deque(autoregressive_steps(model, input_ids, options, attention_mask, generator), maxlen=1)[0]
    return GenerateOutput(state.canvas, state.prompt_length, state.stats)

"""Left-to-right decoding for the autoregressive baseline (a model with `config.causal`).

Only for comparisons with the diffusion model: greedy or temperature sampling with a key/value
cache, prompts left padded with an attention mask, rows stopping at EOS / end-of-turn.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling.core import GenerateOutput, GenerateStats


@torch.no_grad()
def generate_autoregressive(model: LLaDAModel, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                            gen_length: int = 128, temperature: float = 0.0,
                            generator: torch.Generator | None = None) -> GenerateOutput:
    """Append `gen_length` tokens to each row of `input_ids` (B, P); finished rows pad with EOS."""
    cfg = model.config
    if not cfg.causal:
        raise GenerationError("generate_autoregressive needs a causal model (the AR baseline); "
                              "use llada.sampling.generate for a diffusion model")
    B, P = input_ids.shape
    if P == 0:
        raise GenerationError("the prompt is empty; give at least one token")
    if P + gen_length > cfg.max_sequence_length:
        raise GenerationError(f"prompt ({P}) + gen_length ({gen_length}) exceeds max_sequence_length "
                              f"{cfg.max_sequence_length}")
    if temperature < 0:
        raise GenerationError(f"temperature must be >= 0, got {temperature}")
    device = model.device
    ids = input_ids.to(device)
    am = torch.ones_like(ids) if attention_mask is None else attention_mask.to(device).long()
    positions = (am.cumsum(1) - 1).clamp(min=0)
    stops = torch.tensor([t for t in (cfg.eos_token_id, cfg.eot_token_id) if t is not None], device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out = torch.full((B, gen_length), cfg.eos_token_id, dtype=torch.long, device=device)
    stats = GenerateStats()

    logits, past = model.forward_kv(ids, am, positions, output_positions=slice(-1, None))
    stats.full_forwards += 1
    next_pos = positions[:, -1:] + 1
    for i in range(gen_length):
        scores = logits[:, -1].double()
        if temperature > 0:
            probs = torch.softmax(scores / temperature, -1)
            token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            token = scores.argmax(-1)
        token = torch.where(done, cfg.eos_token_id, token)
        out[:, i] = token
        done |= torch.isin(token, stops)
        if i + 1 == gen_length or bool(done.all()):
            break
        am = torch.cat([am, torch.ones(B, 1, dtype=am.dtype, device=device)], 1)
        logits, new = model.forward_kv(token[:, None], am, next_pos, past_key_values=past)
        past = [(torch.cat((pk, nk), 2), torch.cat((pv, nv), 2)) for (pk, pv), (nk, nv) in zip(past, new, strict=True)]
        next_pos = next_pos + 1
        stats.cached_forwards += 1
    stats.tokens = B * gen_length
    stats.steps = stats.forwards
    return GenerateOutput(torch.cat([ids, out], 1), P, stats)

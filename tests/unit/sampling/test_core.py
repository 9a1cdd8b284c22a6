"""The samplers against a slow restatement of LLaDA's reference `generate.py`, and their options."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from support.sampling import EOS, EOT, MASK

import llada.sampling.core as core
from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling import REMASKING, SamplerOptions, generate, infill
from llada.sampling.core import denoise


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = LLaDAModel(tiny_config(max_sequence_length=128)).eval()
    with torch.no_grad():
        for w in m.parameters():  # larger weights than the init: predictions that depend on the context ...
            if w.dim() == 2:
                w.normal_(0, 0.2)
        m.transformer.ff_out.weight.mul_(5)  # ... and sharp enough that decisions are not near-ties
    return m


def reference_generate(model, prompt, attention_mask=None, steps=8, gen_length=16, block_length=16, cfg_scale=0.0,
                       logits_eos_inf=False, confidence_eos_eot_inf=False):
    """LLaDA's reference algorithm at temperature 0, written plainly: full forwards, per-row loops."""
    B, P = prompt.shape
    x = torch.full((B, P + gen_length), MASK, dtype=torch.long)
    x[:, :P] = prompt
    am = None if attention_mask is None else torch.cat([attention_mask, torch.ones(B, gen_length, dtype=torch.long)], 1)
    prompt_index = x != MASK
    blocks = gen_length // block_length
    per_block = steps // blocks
    for b in range(blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        n = (x[:, lo:hi] == MASK).sum(1)
        quota = [[int(n[r]) // per_block + (1 if i < int(n[r]) % per_block else 0) for i in range(per_block)]
                 for r in range(B)]
        for i in range(per_block):
            mask_index = x == MASK
            if cfg_scale > 0:
                un = x.clone()
                un[prompt_index] = MASK
                both = model(torch.cat([x, un]), attention_mask=None if am is None else torch.cat([am, am]))
                cond, unc = both.chunk(2)
                logits = unc + (cfg_scale + 1) * (cond - unc)
            else:
                logits = model(x, attention_mask=am)
            if logits_eos_inf:
                logits[:, :, EOS] = float("-inf")
            x0 = logits.argmax(-1)
            if confidence_eos_eot_inf:
                logits[:, :, EOS] = logits[:, :, EOT] = float("-inf")
            p = F.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)
            p[:, hi:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, p, torch.tensor(float("-inf")))
            for r in range(B):
                _, idx = confidence[r].topk(quota[r][i])
                x[r, idx] = x0[r, idx]
    return x


SETTINGS = [
    dict(steps=16, gen_length=16, block_length=16),
    dict(steps=8, gen_length=16, block_length=4),
    dict(steps=4, gen_length=16, block_length=8),  # several tokens per step
    dict(steps=8, gen_length=16, block_length=8, cfg_scale=1.5),
    dict(steps=8, gen_length=16, block_length=8, logits_eos_inf=True),
    dict(steps=16, gen_length=16, block_length=4, confidence_eos_eot_inf=True),
]


@pytest.mark.parametrize("settings", SETTINGS)
@torch.no_grad()
def test_greedy_matches_reference(model, settings):
    prompt = torch.randint(0, 55, (2, 6))
    ours = generate(model, prompt, **settings).sequences
    ref = reference_generate(model, prompt, **settings)
    assert torch.equal(ours, ref)


@torch.no_grad()
def test_left_padded_batch_rows_advance_independently(model):
    a, b = torch.randint(0, 55, (7,)), torch.randint(0, 55, (4,))
    batch = torch.stack([a, torch.cat([torch.full((3,), EOS), b])])
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    settings = dict(steps=8, gen_length=16, block_length=8)
    out = generate(model, batch, mask, **settings)
    assert torch.equal(out.responses[0], reference_generate(model, a[None], **settings)[0, 7:])
    assert torch.equal(out.responses[1], reference_generate(model, b[None], **settings)[0, 4:])
    # and the reference with the same padded batch and mask agrees too
    assert torch.equal(out.sequences, reference_generate(model, batch, mask, **settings))


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("extra", [{}, {"threshold": 0.3}, {"cfg_scale": 1.0}])
@torch.no_grad()
def test_cache_refreshed_every_step_reproduces_uncached(model, cache, extra):
    prompt = torch.randint(0, 55, (2, 5))
    settings = dict(steps=8, gen_length=16, block_length=4, **extra)
    plain = generate(model, prompt, **settings)
    canvas = torch.cat([prompt, torch.full((2, 16), MASK)], 1)
    for _ in denoise(model, canvas, SamplerOptions(cache=cache, **settings), start=5, refresh_every_step=True):
        pass
    assert torch.equal(plain.sequences, canvas)
    fast = generate(model, prompt, cache=cache, **settings)  # refreshed per block: an approximation
    assert fast.stats.full_forwards == 4 and fast.stats.cached_forwards == fast.stats.steps - 4
    assert (fast.sequences != MASK).all()


@torch.no_grad()
def test_threshold_decoding(model):
    prompt = torch.randint(0, 55, (2, 5))
    canvas = torch.cat([prompt, torch.full((2, 16), MASK)], 1)
    stats, before, seen = core.GenerateStats(), canvas.clone(), []
    opts = SamplerOptions(gen_length=16, block_length=8, steps=4, threshold=0.2)
    for state in core.denoise(model, canvas, opts, start=5, stats=stats):
        lo = 5 + 8 * state.block
        left = (before[:, lo:lo + 8] == MASK).sum(-1)  # masks of this block before the step
        n = state.transferred.sum(-1)
        # a row with masks left in its block unmasks at least one of them; a finished row none
        assert torch.equal(n >= 1, left > 0) and (n <= left).all()
        assert not state.transferred[:, :lo].any() and not state.transferred[:, lo + 8:].any()
        seen.append(n)
        before = canvas.clone()
    assert (canvas != MASK).all()
    assert int(torch.stack(seen).sum()) == 2 * 16  # every response token unmasked exactly once
    assert stats.steps == len(seen) <= 16
    canvas = torch.cat([prompt, torch.full((2, 16), MASK)], 1)
    low = core.GenerateStats()
    for _ in core.denoise(model, canvas, opts.replace(threshold=1e-9), start=5, stats=low):
        pass
    assert low.steps == low.forwards == 2  # everything above the threshold: one step per block
    assert (canvas != MASK).all()


@pytest.mark.parametrize("remasking", sorted(REMASKING))
@torch.no_grad()
def test_every_remasking_strategy_completes(model, remasking):
    prompt = torch.randint(0, 55, (2, 5))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = generate(model, prompt, steps=8, gen_length=8, remasking=remasking, temperature=0.7, generator=g1)
    b = generate(model, prompt, steps=8, gen_length=8, remasking=remasking, temperature=0.7, generator=g2)
    assert torch.equal(a.sequences, b.sequences) and (a.responses != MASK).all()


@torch.no_grad()
def test_early_exit_fills_eos(model):
    class SaysEOS(LLaDAModel):  # predicts EOS everywhere
        def forward(self, *args, **kwargs):
            logits = super().forward(*args, **kwargs)
            logits[..., EOS] += 1e4
            return logits

    biased = SaysEOS(model.config).eval()
    prompt = torch.randint(0, 55, (1, 5))
    out = generate(biased, prompt, steps=16, gen_length=16, block_length=4, early_exit=True)
    assert (out.responses == EOS).all()
    assert out.stats.steps == 4  # stopped after the first block


@torch.no_grad()
def test_infill_fills_only_masks(model):
    ids = torch.randint(0, 55, (2, 12))
    ids[0, 3:6] = MASK
    ids[1, 8] = MASK
    out = infill(model, ids)
    keep = ids != MASK
    assert torch.equal(out.sequences[keep], ids[keep]) and (out.sequences != MASK).all()
    assert out.stats.steps == 3


@pytest.mark.parametrize("kwargs,message", [
    (dict(gen_length=10, block_length=4), "gen_length \\(10\\) must be a multiple of block_length \\(4\\)"),
    (dict(steps=3, gen_length=16, block_length=4), "steps \\(3\\) must be a positive multiple of the number of blocks"),
    (dict(remasking="nope"), "unknown remasking 'nope'; choose one of: low_confidence"),
    (dict(temperature=-1.0), "temperature must be (a finite number )?>= 0"),
    (dict(threshold=1.5), "threshold must be in \\(0, 1\\]"),
    (dict(gen_length=200, block_length=200, steps=200), "exceeds the model's max_sequence_length 128"),
    (dict(cache="triple"), "unknown cache 'triple'"),
])
def test_bad_parameters(model, kwargs, message):
    settings = {"steps": 8, "gen_length": 16, "block_length": 16, **kwargs}
    with pytest.raises(GenerationError, match=message):
        generate(model, torch.randint(0, 55, (1, 4)), **settings)
    with pytest.raises(GenerationError, match="the prompt is empty"):
        generate(model, torch.zeros((1, 0), dtype=torch.long))


@pytest.mark.parametrize("input_ids,message", [
    (torch.tensor([[1, 999]]), "input_ids holds token id 999, outside the model's embedding 0..63"),
    (torch.tensor([[1, -1]]), "input_ids holds token id -1, outside the model's embedding 0..63"),
    (torch.tensor([[1.0, 2.0]]), "input_ids must hold integer token ids, got a torch.float32 tensor"),
    ([[1, 2]], "input_ids must be a torch.Tensor of token ids (batch, prompt_length), got list"),
])
def test_sample_names_input_ids_that_are_not_token_ids(model, input_ids, message):
    from llada.sampling import SamplerOptions, sample

    with pytest.raises(GenerationError, match=re.escape(message)):
        sample(model, input_ids, SamplerOptions(gen_length=8, block_length=8))


def reference_num_transfer(n: int, steps: int) -> list[int]:
    """LLaDA's `get_num_transfer_tokens` for one row: n // steps per step, the first n % steps one more."""
    base, remainder = n // steps, n % steps
    return [base + 1 if i < remainder else base for i in range(steps)]


def reference_low_confidence(model, canvas, start: int, block_length: int, steps: int):
    """Low-confidence remasking at temperature 0, row by row and step by step: predict every
    position, keep the quota of masked positions of the block whose argmax is most probable."""
    x = canvas.clone()
    blocks = (x.shape[1] - start) // block_length
    for r in range(x.shape[0]):
        row = x[r:r + 1]  # a view: writes land in x
        for b in range(blocks):
            lo, hi = start + b * block_length, start + (b + 1) * block_length
            for k in reference_num_transfer(int((row[0, lo:hi] == MASK).sum()), steps // blocks):
                confidence, predicted = F.softmax(model(row)[0], -1).max(-1)
                masked = [i for i in range(lo, hi) if row[0, i] == MASK]
                for i in sorted(masked, key=lambda i: (-confidence[i].item(), i))[:k]:
                    row[0, i] = predicted[i]
    return x


@pytest.mark.parametrize("gen_length,block_length,steps", [
    (8, 8, 6), (8, 8, 3), (16, 16, 5),  # one block, steps not dividing its tokens
    (16, 8, 6), (24, 8, 9), (16, 8, 10),  # several blocks, each with an uneven share of the steps
])
@torch.no_grad()
def test_uneven_schedule_inside_denoise(model, gen_length, block_length, steps):
    P, B = 5, 3
    g = torch.Generator().manual_seed(gen_length * 100 + steps)
    canvas = torch.full((B, P + gen_length), MASK)
    canvas[:, :P] = torch.randint(0, 55, (B, P), generator=g)
    # rows with fewer masks in a block get their own quota: row 1 knows two tokens of block 0,
    # row 2 all of block 0 but its first and last (2 masks: a quota of 0 in some steps)
    canvas[1, [P + 1, P + 4]] = torch.randint(0, 55, (2,), generator=g)
    canvas[2, P + 1:P + block_length - 1] = torch.randint(0, 55, (block_length - 2,), generator=g)
    if gen_length > block_length:
        canvas[1, P + block_length + 2] = 7
    start = canvas.clone()
    blocks = gen_length // block_length
    expected = []  # per step, per row: how many positions the reference schedule unmasks
    for b in range(blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        quotas = [reference_num_transfer(int((start[r, lo:hi] == MASK).sum()), steps // blocks) for r in range(B)]
        expected += [[q[i] for q in quotas] for i in range(steps // blocks)]

    seen, before = [], canvas.clone()
    opts = SamplerOptions(gen_length=gen_length, block_length=block_length, steps=steps)
    for state in core.denoise(model, canvas, opts, start=P):
        lo = P + state.block * block_length
        outside = state.transferred.clone()
        outside[:, lo:lo + block_length] = False
        assert not outside.any()  # only the current block changes
        assert (before[state.transferred] == MASK).all()  # only masks are unmasked...
        assert torch.equal(canvas[~state.transferred], before[~state.transferred])  # ...and nothing else moves
        seen.append(state.transferred.sum(-1).tolist())
        before = canvas.clone()
    assert seen == expected
    assert expected != [[gen_length // steps] * B] * steps  # the case is uneven
    assert (canvas != MASK).all()
    assert torch.equal(canvas, reference_low_confidence(model, start, P, block_length, steps))


@pytest.mark.parametrize("cache", [None, "dual"])
def test_top_k_one_samples_the_greedy_answer(model, cache):
    prompt = torch.randint(0, 55, (2, 6), generator=torch.Generator().manual_seed(4))
    opts = dict(gen_length=16, steps=16, block_length=8, cache=cache)
    greedy = generate(model, prompt, **opts).sequences
    sampled = generate(model, prompt, **opts, temperature=5.0, generator=torch.Generator().manual_seed(0)).sequences
    assert not torch.equal(sampled, greedy)  # a high temperature alone does change the answer
    # (not with tempered_confidence: under a one-token distribution every confidence is 1, so the
    # positions are taken in order rather than by the model's confidence)
    for cut in ({"top_k": 1}, {"top_p": 1e-9}, {"top_k": 1, "top_p": 0.5}):
        got = generate(model, prompt, **opts, temperature=5.0, generator=torch.Generator().manual_seed(0), **cut)
        assert torch.equal(got.sequences, greedy), cut


@pytest.mark.parametrize("cache", [None, "dual"])
def test_min_p_one_samples_the_greedy_answer(model, cache):
    """min_p 1 keeps the most probable token alone: a hot sample is the greedy answer; a small
    min_p still samples."""
    prompt = torch.randint(0, 55, (2, 6), generator=torch.Generator().manual_seed(4))
    opts = dict(gen_length=16, steps=16, block_length=8, cache=cache, temperature=5.0)
    greedy = generate(model, prompt, **{**opts, "temperature": 0.0}).sequences
    got = generate(model, prompt, **opts, min_p=1.0, generator=torch.Generator().manual_seed(0)).sequences
    assert torch.equal(got, greedy)
    loose = generate(model, prompt, **opts, min_p=1e-6, generator=torch.Generator().manual_seed(0)).sequences
    assert not torch.equal(loose, greedy)

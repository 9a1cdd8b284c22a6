"""The samplers against a slow restatement of LLaDA's reference `generate.py`, and their options."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

import llada.sampling.core as core
import llada.sampling.predict as predict
from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling import REMASKING, SamplerOptions, generate, infill
from llada.sampling.core import denoise, select_factor
from llada.sampling.schedule import num_transfer_tokens

MASK, EOS, EOT = 63, 62, 60


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


def test_factor_rule_matches_its_definition():
    conf = torch.tensor([[0.99, 0.9, 0.8, 0.5, float("-inf")]])
    masked = torch.tensor([[True, True, True, True, False]])
    # rank r (1-based) accepted when conf >= 1 - f/(r+1): f=0.5 -> 0.75, 0.833, 0.875, 0.9 ...
    assert select_factor(conf, masked, 0.5).tolist() == [[True, True, False, False, False]]
    assert select_factor(conf, masked, 1e-6).tolist() == [[True, False, False, False, False]]


def test_transfer_schedule():
    counts = torch.tensor([16, 7, 0, 3])
    q = num_transfer_tokens(counts, 4)
    assert q.sum(-1).tolist() == counts.tolist()
    assert q[1].tolist() == [2, 2, 2, 1] and q[3].tolist() == [1, 1, 1, 0]


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


@pytest.mark.parametrize("data,message", [
    ({"gen_length": None}, "gen_length must be a positive integer, got None"),
    ({"preset": ["fast"]}, "unknown sampler preset ['fast']; choose one of: reference"),
    ({"remasking": ["random"]}, "remasking must be a string, got ['random']"),
    ({"schedule": None}, "schedule must be a string, got None"),
    ({"early_exit": None}, "early_exit must be true or false, got None"),
    ({"early_exit": ["x"]}, "early_exit must be true or false, got ['x']"),
    ({"block_causal": 2}, "block_causal must be true or false, got 2"),
])
def test_sampler_options_of_the_wrong_type_name_the_option(data, message):
    from llada.sampling import SamplerOptions

    with pytest.raises(GenerationError, match=re.escape(message)):
        SamplerOptions.from_dict(data)
    if "preset" not in data:  # the constructor checks the same
        with pytest.raises(GenerationError, match=re.escape(message)):
            SamplerOptions(**data)
    with pytest.raises(GenerationError, match="sampler options must be a mapping of option names to values, got list"):
        SamplerOptions.from_dict(["fast"])  # type: ignore[arg-type]


# ---- the text of a partly masked canvas -----------------------------------------------------------------------

def _metaspace_tokenizer():
    """A SentencePiece-style tokenizer: decoding a lone word piece drops its leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(["the cat sat on the mat", "a dog ran far"] * 10,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<m>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_token_pieces_keep_characters_and_spaces_whole():
    from llada.sampling.text import token_pieces
    from llada.tokenizer import train_tokenizer

    byte_level = train_tokenizer(["the cat sat on the mat", "a dog ran far"] * 10, vocab_size=300)
    text = " café au lait, 中文 ok"
    ids = byte_level(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # the accented and CJK letters are split across byte tokens
    pieces = token_pieces(byte_level, ids, [False] * len(ids))
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert [p for p in pieces if p and not p.isascii()] == ["é", "中", "文"]  # each on the token completing it

    # Masks between the bytes of a character: nothing is shown for it until it is whole.
    first = ids.index(byte_level("é", add_special_tokens=False)["input_ids"][0])
    hidden = [i == first + 1 for i in range(len(ids))]
    pieces = token_pieces(byte_level, ids, hidden)
    assert pieces[first] == pieces[first + 1] == "" and "\ufffd" not in "".join(pieces)  # é is two tokens
    assert "".join(pieces[:first]) == text[: text.index("é")]
    assert "".join(pieces[first + 2:]) == text[text.index("é") + 1:]
    lead = ids[first]  # the first byte of é alone: waits before a mask, is final before a special token or the end
    eos = byte_level.eos_token_id
    assert token_pieces(byte_level, [lead, 0], [False, True]) == ["", ""]
    assert token_pieces(byte_level, [lead, eos], [False, False], {eos}) == ["\ufffd", byte_level.eos_token]
    assert token_pieces(byte_level, [lead], [False]) == ["\ufffd"]

    sp = _metaspace_tokenizer()
    ids = sp("the cat sat on a mat", add_special_tokens=False)["input_ids"]
    assert sp.decode(ids[1:2]) != sp.decode(ids[:2])[len(sp.decode(ids[:1])):]  # alone, a piece loses its space
    pieces = token_pieces(sp, ids, [False] * len(ids))
    assert "".join(pieces) == sp.decode(ids) == "the cat sat on a mat"
    # a special token (here the mask-like "<m>") shows its name and starts a new run
    m = sp.convert_tokens_to_ids("<m>")
    pieces = token_pieces(sp, ids[:2] + [m] + ids[2:], [False] * (len(ids) + 1), special={m})
    assert pieces[2] == "<m>" and "".join(pieces[:2]) == sp.decode(ids[:2])


def test_cut_at_stop_texts_takes_the_earliest():
    from llada.sampling.text import cut_at_stop_texts

    assert cut_at_stop_texts("a. b\n\nc", ["\n\n", "."]) == ("a", True)
    assert cut_at_stop_texts("abc", ["", "x"]) == ("abc", False)


# ---- the reverse process inside `denoise`, against plain restatements ------------------------------------------

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


class FixedLogits(torch.nn.Module):
    """A context-free stand-in for the model: the same logits (L, V) whatever the input."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table, self.config = table, tiny_config()

    def forward(self, ids, attention_mask=None, output_positions=None, **_):
        out = self.table[: ids.shape[1]].expand(ids.shape[0], -1, -1)
        return out if output_positions is None else out[:, output_positions]


# Three positions whose distributions each strategy ranks differently (probabilities of the top tokens):
DESIGNED = [[0.50, 0.45, 0.03, 0.02],  # the most probable argmax: low_confidence keeps it first
            [0.40, 0.20, 0.20, 0.20],  # the widest top-1 minus top-2 gap: margin keeps it first
            [0.49, 0.48, 0.02, 0.01]]  # the lowest entropy: entropy keeps it first


def _designed_logits() -> torch.Tensor:
    """(2 + 3, 64) logits: two prompt positions, then the designed three; each position's top
    token is a different id, the other 60 ids get probability ~e^-20."""
    table = torch.full((5, 64), -20.0)
    for j, probs in enumerate(DESIGNED):
        for rank, p in enumerate(probs):
            table[2 + j, (10 * j + rank) % 55] = math.log(p)
    return table


@pytest.mark.parametrize("name", ["low_confidence", "margin", "entropy"])
@torch.no_grad()
def test_remasking_strategies_match_their_definitions(name):
    table = _designed_logits()
    p = np.exp(table.double().numpy())
    p /= p.sum(-1, keepdims=True)  # (5, 64) softmax, computed apart from torch
    top2 = np.sort(p, -1)[:, ::-1][:, :2]
    expected = {"low_confidence": top2[:, 0], "margin": top2[:, 0] - top2[:, 1],
                "entropy": (p * np.log(p)).sum(-1)}[name][2:]  # higher is kept first
    x0 = table[2:].argmax(-1)[None]
    got = REMASKING[name](table[2:][None], x0, None)[0].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    first = {"low_confidence": 0, "margin": 1, "entropy": 2}[name]
    assert int(np.argmax(expected)) == first  # the designed case separates the strategies

    # inside denoise, one token per step: the positions are unmasked in that order, with their argmax
    canvas = torch.tensor([[1, 2, MASK, MASK, MASK]])
    order = []
    opts = SamplerOptions(gen_length=3, block_length=3, steps=3, remasking=name)
    for state in core.denoise(FixedLogits(table), canvas, opts, start=2):
        order += (state.transferred[0].nonzero()[:, 0] - 2).tolist()
    assert order == list(np.argsort(-expected, kind="stable"))
    assert canvas[0, 2:].tolist() == x0[0].tolist()


# ---- selection rules on hand-made confidences --------------------------------------------------------------------

NEG = float("-inf")


def reference_threshold(confidence, masked, threshold: float) -> list[list[bool]]:
    """Every masked position at or above the threshold, and the most confident masked one."""
    out = []
    for c, m in zip(confidence.tolist(), masked.tolist(), strict=True):
        row = [mi and ci >= threshold for ci, mi in zip(c, m, strict=True)]
        candidates = [i for i in range(len(c)) if m[i]]
        if candidates:
            row[max(candidates, key=lambda i: (c[i], -i))] = True
        out.append(row)
    return out


def test_threshold_rule_hand_cases():
    T, F_ = True, False
    masked = torch.tensor([[T, T, T, F_, T, F_],  # three at or above 0.5, one of them exactly at it
                           [T, T, F_, T, F_, F_],  # none reaches 0.5: only the most confident masked one
                           [F_, F_, F_, F_, F_, F_]])  # nothing masked: nothing selected
    # unmasked positions carry -inf, as denoise passes them
    conf = torch.tensor([[0.75, 0.5, 0.25, NEG, 0.875, NEG],
                         [0.125, 0.375, NEG, 0.25, NEG, NEG],
                         [NEG] * 6])
    assert core.select_threshold(conf, masked, 0.5).tolist() == [[T, T, F_, F_, T, F_],
                                                                  [F_, T, F_, F_, F_, F_], [F_] * 6]
    assert core.select_threshold(conf, masked, 1.0).tolist() == [[F_, F_, F_, F_, T, F_],
                                                                  [F_, T, F_, F_, F_, F_], [F_] * 6]
    assert core.select_threshold(conf, masked, 0.2).tolist() == [[T, T, T, F_, T, F_],
                                                                  [F_, T, F_, T, F_, F_], [F_] * 6]
    g = torch.Generator().manual_seed(0)
    masked = torch.rand((200, 10), generator=g) < 0.6
    conf = torch.rand((200, 10), generator=g).masked_fill(~masked, NEG)
    for threshold in (0.05, 0.5, 0.9, 1.0):
        got = core.select_threshold(conf, masked, threshold)
        assert got.tolist() == reference_threshold(conf, masked, threshold)
        assert not (got & ~masked).any()
        assert torch.equal(got.any(-1), masked.any(-1))  # at least one wherever a mask is left


def test_threshold_rule_ignores_confidence_of_unmasked_positions():
    masked = torch.tensor([[False, True, True]])
    conf = torch.tensor([[0.99, 0.3, 0.4]])  # position 0 is already decoded; its confidence is stale
    assert core.select_threshold(conf, masked, 0.5).tolist() == [[False, False, True]]


def test_factor_rule_ignores_confidence_of_unmasked_positions():
    masked = torch.tensor([[False, True, True]])
    conf = torch.tensor([[0.99, 0.3, 0.4]])
    assert core.select_factor(conf, masked, 1e-6).tolist() == [[False, False, True]]


def test_quota_rule_takes_the_k_most_confident():
    conf = torch.tensor([[0.1, 0.9, 0.5, NEG, 0.7], [0.3, 0.3, 0.2, 0.8, NEG]])
    got = core.select_quota(conf, torch.tensor([2, 3]))
    assert got.tolist() == [[False, True, False, False, True], [True, True, False, True, False]]  # ties: first
    assert core.select_quota(conf, torch.tensor([0, 0])).sum() == 0


# ---- temperature: Gumbel-max sampling against softmax(logits / T) ------------------------------------------------

CHI2_CRITICAL_DF5 = 20.515  # chi-square critical value for df = 5 (six categories) at p = 0.001


def _chi2(counts: list[int], probs: list[float]) -> float:
    n = sum(counts)
    return sum((c - n * p) ** 2 / (n * p) for c, p in zip(counts, probs, strict=True))


def _softmax(xs: list[float], temperature: float) -> list[float]:
    e = [math.exp(x / temperature) for x in xs]
    return [v / sum(e) for v in e]


def test_gumbel_sampling_follows_softmax_over_temperature():
    logits = [1.0, 0.5, 0.0, -0.5, -1.0, -2.0]
    n = 200_000
    table = torch.tensor(logits).expand(n, -1)
    for temperature in (0.5, 1.0, 2.0):
        draws = predict.add_gumbel_noise(table, temperature, torch.Generator().manual_seed(0)).argmax(-1)
        counts = torch.bincount(draws, minlength=6).tolist()
        assert _chi2(counts, _softmax(logits, temperature)) < CHI2_CRITICAL_DF5
        for wrong in {0.5, 1.0, 2.0} - {temperature}:  # the same test rejects another temperature's formula
            assert _chi2(counts, _softmax(logits, wrong)) > 10 * CHI2_CRITICAL_DF5
    assert torch.equal(predict.add_gumbel_noise(table[:3], 0.0), table[:3])  # temperature 0: the logits (greedy)


@torch.no_grad()
def test_denoise_samples_at_its_temperature():
    """Through denoise: one masked position per row, fixed logits; the tokens follow softmax(logits / T)."""
    logits = [1.0, 0.5, 0.0, -0.5, -1.0, -2.0]
    table = torch.full((2, 64), -1e4)
    table[1, :6] = torch.tensor(logits)
    n = 50_000
    canvas = torch.tensor([[1, MASK]]).repeat(n, 1)
    opts = SamplerOptions(gen_length=1, block_length=1, steps=1, temperature=0.5)
    for _ in core.denoise(FixedLogits(table), canvas, opts, start=1, generator=torch.Generator().manual_seed(1)):
        pass
    counts = torch.bincount(canvas[:, 1], minlength=64).tolist()
    assert sum(counts[:6]) == n
    assert _chi2(counts[:6], _softmax(logits, 0.5)) < CHI2_CRITICAL_DF5
    assert _chi2(counts[:6], _softmax(logits, 1.0)) > 10 * CHI2_CRITICAL_DF5


def test_threshold_compares_in_full_precision():
    """A bfloat16 confidence just under the threshold must not pass because 0.9 rounds to 0.8984375."""
    conf = torch.tensor([[0.899, 0.5]], dtype=torch.float32)
    masked = torch.tensor([[True, True]])
    assert torch.tensor(0.9, dtype=torch.bfloat16).item() < 0.9  # the rounding this guards against
    assert core.select_threshold(conf, masked, 0.9).tolist() == [[True, False]]  # (the most confident: always)
    conf = torch.tensor([[0.899, 0.95]], dtype=torch.float32)
    assert core.select_threshold(conf, masked, 0.9).tolist() == [[False, True]]
    conf_bf16 = torch.tensor([[0.8984375, 0.95]], dtype=torch.bfloat16)  # exactly bf16(0.9): below 0.9
    assert core.select_threshold(conf_bf16, masked, 0.9).tolist() == [[False, True]]


# ------------------------------------------------------------------------------------ top_k, top_p


def _kept_by_a_loop(logits: torch.Tensor, top_k, top_p) -> torch.Tensor:
    """(rows, V) bool: the tokens top_k then top_p keep, token by token as LLaDA 2.x's sampler
    defines them: the k largest (ties at the k-th kept), then, in descending order, each token
    whose predecessors' probabilities sum to at most top_p."""
    keep = torch.ones_like(logits, dtype=torch.bool)
    for r in range(logits.shape[0]):
        row = logits[r].double()
        if top_k is not None:
            kth = sorted(row.tolist(), reverse=True)[top_k - 1]
            keep[r] &= row >= kth
        if top_p is not None:
            p = torch.softmax(row.masked_fill(~keep[r], float("-inf")), -1)
            total = 0.0
            for i in sorted(range(len(row)), key=lambda i: -row[i].item()):
                if not keep[r, i]:
                    continue
                keep[r, i] = total <= top_p
                total += p[i].item()
    return keep


@pytest.mark.parametrize("top_k,top_p", [(3, None), (None, 0.5), (None, 0.9), (5, 0.7), (1, None), (None, 1e-9)])
def test_filter_logits_keeps_what_a_loop_keeps(top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(6, 12, dtype=torch.float64) * 2
    got = torch.isfinite(predict.filter_logits(logits, SamplerOptions(top_k=top_k, top_p=top_p)))
    assert torch.equal(got, _kept_by_a_loop(logits, top_k, top_p))
    assert got.any(-1).all()  # the most probable token always stays


def test_top_k_top_p_sampling_follows_the_cut_distribution():
    """Gumbel-max draws from the cut logits: nothing outside top_k / the nucleus, and inside it the
    frequencies of softmax(logits / T) renormalised over what is kept (temperature applied first)."""
    logits = torch.tensor([[3.0, 2.5, 2.0, 1.0, 0.5, -1.0, 0.0, 0.2]], dtype=torch.float64)
    T, n = 0.8, 20000
    predictor = predict.Predictor(tiny_config(vocab_size=8, mask_token_id=7, eos_token_id=6, pad_token_id=6,
                                              bos_token_id=5, eot_token_id=4),
                                  SamplerOptions(temperature=T, top_k=4, top_p=0.8, tempered_confidence=True),
                                  torch.Generator().manual_seed(0))
    predictor.never = torch.zeros(8, dtype=torch.bool)  # every column may be drawn here
    draws = torch.stack([predictor(logits[None].expand(1, n, 8).clone())[0][0]]).flatten()
    want = torch.softmax(predict.filter_logits(logits[0] / T, SamplerOptions(top_k=4, top_p=0.8)), -1)
    freq = torch.bincount(draws, minlength=8).double() / n
    assert set(draws.unique().tolist()) == set(torch.nonzero(want).flatten().tolist())
    assert (freq - want).abs().max() < 0.015, (freq, want)


def test_tempered_confidence_is_the_sampled_tokens_probability_under_the_cut_distribution():
    """tempered_confidence ranks by the probability LLaDA 2.x's `_sample_with_temperature_topk_topp`
    returns for the token drawn (softmax of the tempered, cut logits); without it, by the plain softmax."""
    cfg = tiny_config(vocab_size=8, mask_token_id=7, eos_token_id=6, pad_token_id=6, bos_token_id=5, eot_token_id=4)
    logits = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    for tempered in (True, False):
        # a threshold rule: confidences in float64
        opts = SamplerOptions(temperature=0.7, top_k=5, top_p=0.9, tempered_confidence=tempered, threshold=0.9)
        predictor = predict.Predictor(cfg, opts, torch.Generator().manual_seed(2))
        x0, confidence = predictor(logits.clone())
        probs = torch.softmax(predict.filter_logits(logits.double() / 0.7, opts) if tempered else logits.double(), -1)
        assert torch.allclose(confidence, probs.gather(-1, x0[..., None])[..., 0], atol=1e-12)


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


def test_top_k_and_top_p_are_validated():
    from llada.sampling import SamplerOptions

    assert SamplerOptions(top_k=0).top_k is None  # transformers' "no top-k"
    for bad, needle in (({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"), ({"top_p": 0}, "top_p"),
                        ({"top_p": 1.5}, "top_p"), ({"top_p": float("nan")}, "top_p")):
        with pytest.raises(GenerationError, match=needle):
            SamplerOptions(**bad)
    assert SamplerOptions.from_dict({"top_k": "none", "top_p": "0.9"}).top_p == 0.9


def test_autoregressive_baseline_takes_top_k_and_top_p():
    from llada.sampling.autoregressive import generate_autoregressive

    torch.manual_seed(0)
    ar = LLaDAModel(tiny_config(causal=True, max_sequence_length=128)).eval()
    prompt = torch.randint(0, 55, (2, 5), generator=torch.Generator().manual_seed(1))
    greedy = generate_autoregressive(ar, prompt, gen_length=12).sequences
    hot = dict(gen_length=12, temperature=50.0)  # near uniform: only a cut keeps it greedy
    assert not torch.equal(llada_sample(ar, prompt, hot, 0), greedy)
    assert torch.equal(llada_sample(ar, prompt, {**hot, "top_k": 1}, 0), greedy)
    assert torch.equal(llada_sample(ar, prompt, {**hot, "top_p": 1e-9}, 0), greedy)


def llada_sample(model, prompt, options, seed):
    from llada.sampling import SamplerOptions, sample

    return sample(model, prompt, SamplerOptions(block_length=None, **options),
                  generator=torch.Generator().manual_seed(seed)).sequences


# ------------------------------------------------------------------------------------------------ min_p


def _kept_by_a_min_p_loop(logits: torch.Tensor, top_k, top_p, min_p) -> torch.Tensor:
    """(rows, V) bool: what top_k then top_p keep (`_kept_by_a_loop`), then, token by token, each
    of those whose probability among them is at least min_p times the largest (transformers'
    MinPLogitsWarper, applied after its top-k and top-p warpers)."""
    keep = _kept_by_a_loop(logits, top_k, top_p)
    for r in range(logits.shape[0]):
        p = torch.softmax(logits[r].double().masked_fill(~keep[r], float("-inf")), -1).tolist()
        for i in range(len(p)):
            keep[r, i] = bool(keep[r, i]) and p[i] >= min_p * max(p)
    return keep


@pytest.mark.parametrize("top_k,top_p,min_p", [(None, None, 0.1), (None, None, 0.5), (None, None, 1.0),
                                               (None, None, 0.0), (3, None, 0.3), (None, 0.9, 0.2), (5, 0.7, 0.05)])
def test_min_p_keeps_what_a_loop_keeps(top_k, top_p, min_p):
    torch.manual_seed(0)
    logits = torch.randn(6, 12, dtype=torch.float64) * 2
    got = torch.isfinite(predict.filter_logits(logits, SamplerOptions(top_k=top_k, top_p=top_p, min_p=min_p)))
    assert torch.equal(got, _kept_by_a_min_p_loop(logits, top_k, top_p, min_p))
    assert got.any(-1).all()  # the most probable token always stays


def test_min_p_keeps_what_transformers_keeps():
    warpers = pytest.importorskip("transformers.generation.logits_process")
    logits = torch.randn(4, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3
    for min_p in (0.01, 0.1, 0.5, 1.0):
        want = torch.isfinite(warpers.MinPLogitsWarper(min_p)(None, logits.clone()))
        assert torch.equal(torch.isfinite(predict.filter_logits(logits, SamplerOptions(min_p=min_p))), want), min_p


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


def test_min_p_sampling_follows_the_cut_distribution():
    """Gumbel-max draws from softmax(logits / T) renormalised over what min_p keeps, nothing else."""
    logits = torch.tensor([[3.0, 2.5, 2.0, 1.0, 0.5, -1.0, 0.0, 0.2]], dtype=torch.float64)
    T, n = 0.8, 20000
    cfg = tiny_config(vocab_size=8, mask_token_id=7, eos_token_id=6, pad_token_id=6, bos_token_id=5, eot_token_id=4)
    predictor = predict.Predictor(cfg, SamplerOptions(temperature=T, min_p=0.2), torch.Generator().manual_seed(0))
    predictor.never = torch.zeros(8, dtype=torch.bool)  # every column may be drawn here
    draws = predictor(logits[None].expand(1, n, 8).clone())[0].flatten()
    p = torch.softmax(logits[0] / T, -1)
    want = torch.where(p >= 0.2 * p.max(), p, 0.0)
    want = want / want.sum()
    freq = torch.bincount(draws, minlength=8).double() / n
    assert set(draws.unique().tolist()) == set(torch.nonzero(want).flatten().tolist())
    assert (freq - want).abs().max() < 0.015, (freq, want)


def test_min_p_is_validated_and_read_by_the_autoregressive_baseline():
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(GenerationError, match="min_p"):
            SamplerOptions(min_p=bad)
    assert SamplerOptions.from_dict({"min_p": "none"}).min_p is None
    torch.manual_seed(0)
    ar = LLaDAModel(tiny_config(causal=True, max_sequence_length=128)).eval()
    prompt = torch.randint(0, 55, (2, 5), generator=torch.Generator().manual_seed(1))
    hot = dict(gen_length=12, temperature=50.0)  # near uniform: only a cut keeps it greedy
    greedy = llada_sample(ar, prompt, {"gen_length": 12}, 0)
    assert not torch.equal(llada_sample(ar, prompt, hot, 0), greedy)
    assert torch.equal(llada_sample(ar, prompt, {**hot, "min_p": 1.0}, 0), greedy)


# ---- prompts are rendered and encoded within bounds -------------------------------------------------------------

def test_encode_prompts_renders_within_the_template_budget_and_names_a_failing_tokenizer():
    """encode_prompts (generate, chat, sample_text, the built-in evaluation) used apply_chat_template
    unbounded and let a tokenizer's Rust panic (a BaseException) through."""
    from tokenizers import Regex, normalizers

    from llada.errors import CheckpointError
    from llada.sampling.text import encode_prompts
    from llada.tokenizer import CHAT_TEMPLATE, train_tokenizer

    tok = train_tokenizer(["the cat sat on the mat"] * 20, vocab_size=300)
    tok.chat_template = "{% if messages[0]['content'] != 'Hello' %}{{ 'x' * 1500000 }}{% endif %}" + CHAT_TEMPLATE
    assert encode_prompts(tok, "Hello", pad_id=0)[0].shape[0] == 1
    with pytest.raises(CheckpointError, match="the chat template builds a value of about 1,500,000 characters"):
        encode_prompts(tok, "hi", pad_id=0)
    tok.chat_template = CHAT_TEMPLATE
    tok.backend_tokenizer.normalizer = normalizers.Replace(Regex("(a|aa)+$"), "b")
    for chat in (True, False):
        with pytest.raises(CheckpointError, match="the tokenizer fails on this text") as info:
            encode_prompts(tok, "a" * 40 + "!", pad_id=0, chat=chat)
        assert "\n" not in str(info.value)

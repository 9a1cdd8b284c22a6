"""The samplers against a slow restatement of LLaDA's reference `generate.py`, and their options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling import REMASKING, generate, infill
from llada.sampling.core import select_factor
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
    cached = generate(model, prompt, cache=cache, refresh_every_step=True, **settings)
    assert torch.equal(plain.sequences, cached.sequences)
    fast = generate(model, prompt, cache=cache, **settings)  # refreshed per block: an approximation
    assert fast.stats.full_forwards == 4 and fast.stats.cached_forwards == fast.stats.steps - 4
    assert (fast.sequences != MASK).all()


@torch.no_grad()
def test_threshold_decoding(model):
    prompt = torch.randint(0, 55, (2, 5))
    seen = []
    out = generate(model, prompt, steps=4, gen_length=16, block_length=8, threshold=0.2,
                   callback=lambda s: seen.append(s.transferred.sum(-1).clone()))
    assert (out.responses != MASK).all()
    assert all((n >= 1).all() or (n >= 0).all() for n in seen)
    assert int(torch.stack(seen).sum()) == 2 * 16  # every response token unmasked exactly once
    assert out.stats.steps == len(seen) <= 16
    low = generate(model, prompt, steps=4, gen_length=16, block_length=8, threshold=1e-9)
    assert low.stats.steps == 2  # everything above the threshold: one step per block
    assert low.stats.tokens_per_forward == pytest.approx(32 / 2)


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
        def forward_kv(self, *args, **kwargs):
            logits, kv = super().forward_kv(*args, **kwargs)
            logits[..., EOS] += 1e4
            return logits, kv

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
    (dict(temperature=-1.0), "temperature must be >= 0"),
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

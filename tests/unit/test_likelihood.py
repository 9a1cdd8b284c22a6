"""Eq. 6 likelihood estimates against closed forms and a hand-written loop."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config

from llada.likelihood import (
    LikelihoodError,
    choose,
    is_greedy,
    log_likelihood,
    log_likelihoods,
    mask_exactly,
    next_token_logprobs,
    nll_bound,
    stratified_counts,
)
from llada.model import LLaDAModel

MASK = 63


class ContextFree(torch.nn.Module):
    """A predictor that ignores its input: position i always predicts softmax(table[i])."""

    def __init__(self, length: int = 32, vocab: int = 64, scale: float = 2.0):
        super().__init__()
        self.config = tiny_config(max_sequence_length=length)
        g = torch.Generator().manual_seed(1)
        self.table = torch.randn(length, vocab, generator=g, dtype=torch.float64) * scale

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, ids, attention_mask=None, output_positions=None):
        logits = self.table[: ids.shape[1]].expand(ids.shape[0], -1, -1)
        return logits if output_positions is None else logits[output_positions]  # a (B, T) bool mask

    def exact(self, prompt, response) -> float:
        logp = torch.log_softmax(self.table, -1)
        P = len(prompt)
        return sum(logp[P + i, r].item() for i, r in enumerate(response))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = LLaDAModel(tiny_config(max_sequence_length=64)).double().eval()
    with torch.no_grad():
        m.transformer.ff_out.weight.mul_(10)
    return m


def test_stratified_counts_cover_every_length_equally():
    counts = stratified_counts(8, 64, torch.Generator().manual_seed(3))
    assert counts.min() >= 1 and counts.max() <= 8
    assert torch.bincount(counts, minlength=9)[1:].tolist() == [8] * 8
    masks = mask_exactly(counts, 8, torch.Generator().manual_seed(4))
    assert masks.sum(1).tolist() == counts.tolist()


def test_unbiased_for_a_context_free_predictor():
    m = ContextFree()
    prompt, response = [1, 2, 3], [5, 9, 11, 4, 7, 30, 2, 8, 1, 0]
    est = log_likelihood(m, prompt, response, mc_num=4000, batch_size=500, generator=torch.Generator().manual_seed(0))
    exact = m.exact(prompt, response)
    assert abs(est.value - exact) < 4 * est.stderr
    assert abs(est.value - exact) / abs(exact) < 0.02
    assert est.tokens == len(response) and est.samples.shape == (4000,)


def test_exact_count_has_lower_variance_than_bernoulli_masking():
    m = ContextFree()
    prompt, response = [1, 2], list(range(3, 19))
    kw = dict(mc_num=4000, batch_size=1000)
    eq6 = log_likelihood(m, prompt, response, generator=torch.Generator().manual_seed(0), **kw)
    eq3 = log_likelihood(m, prompt, response, masking="bernoulli", generator=torch.Generator().manual_seed(0), **kw)
    exact = m.exact(prompt, response)
    assert abs(eq3.value - exact) < 4 * eq3.stderr  # also unbiased...
    assert eq6.samples.var() < 0.5 * eq3.samples.var()  # ...but noisier


def test_matches_a_hand_loop_and_packing_does_not_matter(model):
    pairs = [([1, 2, 3, 4], [5, 6, 7]), ([8], [9, 10, 11, 12, 13]), ([14, 15], [16])]
    mc = 5
    packed = log_likelihoods(model, pairs, mc_num=mc, batch_size=4, generator=torch.Generator().manual_seed(7))
    alone = log_likelihoods(model, pairs, mc_num=mc, batch_size=1, generator=torch.Generator().manual_seed(7))
    for a, b in zip(packed, alone, strict=True):
        torch.testing.assert_close(a.samples, b.samples)

    # The same draws, replayed: stratified counts then exact-count masks, pair by pair.
    g = torch.Generator().manual_seed(7)
    for (prompt, response), est in zip(pairs, packed, strict=True):
        L = len(response)
        counts = stratified_counts(L, mc, g)
        masks = mask_exactly(counts, L, g)
        for j in range(mc):
            x = torch.tensor(prompt + response)
            target = x.clone()
            for i in range(L):
                if masks[j, i]:
                    x[len(prompt) + i] = MASK
            logp = torch.log_softmax(model(x[None])[0], -1)
            total = sum(logp[len(prompt) + i, target[len(prompt) + i]].item() for i in range(L) if masks[j, i])
            assert est.samples[j].item() == pytest.approx(L / counts[j].item() * total, rel=1e-9)


def test_cfg_combines_a_prompt_masked_pass(model):
    prompt, response = [1, 2, 3], [4, 5, 6, 7]
    s = 1.5
    est = log_likelihood(model, prompt, response, mc_num=3, cfg_scale=s, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    counts = stratified_counts(4, 3, g)
    masks = mask_exactly(counts, 4, g)
    for j in range(3):
        noised = [MASK if masks[j, i] else r for i, r in enumerate(response)]
        cond = model(torch.tensor([prompt + noised]))[0]
        unc = model(torch.tensor([[MASK] * 3 + noised]))[0]
        logp = torch.log_softmax(unc + (s + 1) * (cond - unc), -1)
        total = sum(logp[3 + i, r].item() for i, r in enumerate(response) if masks[j, i])
        assert est.samples[j].item() == pytest.approx(4 / counts[j].item() * total, rel=1e-9)


def test_autoregressive_model_is_exact():
    torch.manual_seed(0)
    ar = LLaDAModel(tiny_config(causal=True, max_sequence_length=32)).double().eval()
    prompt, response = [1, 2, 3], [4, 5, 6]
    est = log_likelihood(ar, prompt, response)
    seq = torch.tensor([prompt + response])
    logp = torch.log_softmax(ar(seq)[0], -1)
    expected = sum(logp[2 + i, r].item() for i, r in enumerate(response))
    assert est.value == pytest.approx(expected, rel=1e-9) and est.stderr == 0.0
    greedy = list(prompt)
    for _ in range(3):  # greedy decoding, one token at a time
        greedy.append(int(ar(torch.tensor([greedy]))[0, -1].argmax()))
    assert is_greedy(ar, prompt, greedy[3:])
    assert not is_greedy(ar, prompt, greedy[3:5] + [(greedy[5] + 1) % 50])


def test_choose_and_greedy(model):
    m = ContextFree(scale=4.0)
    logp = torch.log_softmax(m.table, -1)
    best = [int(logp[2 + i].argmax()) for i in range(3)]
    worst = [int(logp[2 + i].argmin()) for i in range(3)]
    pick = choose(m, [1, 2], [worst, best], mc_num=16)
    assert pick.index == 1 and pick.scores[1] > pick.scores[0]

    for prompt, length in [([1, 2, 3], 4), ([7, 30, 12, 5, 9], 6)]:
        greedy = greedy_decode_loop(model, prompt, length)
        assert is_greedy(model, prompt, greedy)
        for i in (0, length - 1):  # a different token anywhere: not what greedy decoding gives
            other = list(greedy)
            other[i] = (other[i] + 1) % 50
            assert not is_greedy(model, prompt, other)
        # the left-to-right argmax is a different decode: the order of unmasking matters
        assert greedy != left_to_right_loop(model, prompt, length)


def greedy_decode_loop(model, prompt: list[int], length: int) -> list[int]:
    """The reverse process written plainly: `length` masks after the prompt, one token per step,
    the masked position whose argmax token is most probable is filled with that token."""
    x = list(prompt) + [MASK] * length
    for _ in range(length):
        probs = torch.softmax(model(torch.tensor([x]))[0], -1)
        best = None  # (probability, position, token)
        for i in range(len(prompt), len(x)):
            if x[i] == MASK:
                p, token = probs[i].max(-1)
                if best is None or p.item() > best[0]:
                    best = (p.item(), i, int(token))
        x[best[1]] = best[2]
    return x[len(prompt):]


def left_to_right_loop(model, prompt: list[int], length: int) -> list[int]:
    x = list(prompt) + [MASK] * length
    for i in range(len(prompt), len(x)):
        x[i] = int(model(torch.tensor([x]))[0, i].argmax())
    return x[len(prompt):]


def test_nll_bound_units():
    m = ContextFree()
    texts = [[1, 2, 3, 4], [5, 6]]
    rep = nll_bound(m, texts, bytes_total=20, mc_num=2000, batch_size=1000, generator=torch.Generator().manual_seed(0))
    exact = -(m.exact([], texts[0]) + m.exact([], texts[1]))
    assert abs(rep.nll - exact) < 4 * rep.stderr
    assert rep.tokens == 6
    assert rep.perplexity == pytest.approx(math.exp(rep.nll / 6))
    assert rep.bits_per_byte == pytest.approx(rep.nll / math.log(2) / 20)


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt=[1], response=[]), "response is empty"),
    (dict(prompt=[1] * 60, response=[2] * 10), "max_sequence_length"),
    (dict(prompt=[1], response=[2], mc_num=0), "mc_num"),
    (dict(prompt=[1], response=[2], masking="uniform"), "masking"),
    (dict(prompt=[1], response=[2], cfg_scale=-1.0), "cfg_scale"),
])
def test_bad_input(model, kwargs, match):
    with pytest.raises(LikelihoodError, match=match):
        log_likelihood(model, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), r"batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=-2), r"batch_size must be an integer >= 1, got -2"),
    (dict(ids=[1, 2, 999]), r"ids holds token id 999, outside the model's vocabulary 0\.\.63"),
    (dict(ids=[1, 2.5]), r"ids must be token ids \(integers\), got 2\.5"),
])
def test_next_token_logprobs_bad_input(model, kwargs, match):
    with pytest.raises(LikelihoodError, match=match):
        next_token_logprobs(model, **{"ids": [1, 2, 3], **kwargs})


def test_choose_rejects_empty_options(model):
    with pytest.raises(LikelihoodError, match="option 1 is empty"):
        choose(model, [1], [[2], []])
    with pytest.raises(LikelihoodError, match="no options"):
        choose(model, [1], [])


def test_suffix_stays_visible_and_is_never_masked(model):
    prompt, suffix = [1, 2, 3], [20, 21, 22]

    def hand(noised, masked, response, unconditional=False, s=0.0):
        ctx = (lambda xs: [MASK] * len(xs)) if unconditional else (lambda xs: xs)
        logits = model(torch.tensor([prompt + noised + suffix]))[0]
        if s:
            unc = model(torch.tensor([ctx(prompt) + noised + ctx(suffix)]))[0]
            logits = unc + (s + 1) * (logits - unc)
        logp = torch.log_softmax(logits, -1)
        return sum(logp[len(prompt) + i, response[i]].item() for i in masked)

    # One response token: Eq. 6 is exact, log p(r | prompt, suffix) from a single masked position.
    est = log_likelihoods(model, [(prompt, [7])], suffixes=[suffix], mc_num=3)[0]
    assert est.samples.tolist() == pytest.approx([hand([MASK], [0], [7])] * 3, rel=1e-9)
    assert est.stderr == pytest.approx(0.0, abs=1e-12)

    # Two tokens: every draw is one of the three (l, S) cases, weighted L / l; their mean is the closed form.
    r = [7, 9]
    first, second, both = 2 * hand([MASK, 9], [0], r), 2 * hand([7, MASK], [1], r), hand([MASK, MASK], [0, 1], r)
    est = log_likelihoods(model, [(prompt, r)], suffixes=[suffix], mc_num=800,
                          generator=torch.Generator().manual_seed(0))[0]
    assert all(min(abs(v - c) for c in (first, second, both)) < 1e-9 for v in est.samples.tolist())
    # l = 1 or 2 with probability 1/2 each; for l = 1 either position with probability 1/2
    assert est.value == pytest.approx((first + second) / 4 + both / 2, abs=4 * est.stderr + 1e-9)

    # Classifier-free guidance: the unconditional pass hides the suffix as well as the prompt.
    est = log_likelihoods(model, [(prompt, [7])], suffixes=[suffix], mc_num=1, cfg_scale=1.5)[0]
    assert est.value == pytest.approx(hand([MASK], [0], [7], unconditional=True, s=1.5), rel=1e-9)

    # choose() with a suffix picks the option the model ranks highest in the gap.
    logp = torch.log_softmax(model(torch.tensor([prompt + [MASK] + suffix]))[0, len(prompt)], -1)
    options = [[int(t)] for t in logp.argsort()[:4]] + [[int(logp.argmax())]]
    assert choose(model, prompt, options, suffix=suffix, mc_num=2).index == 4


def test_suffix_errors(model):
    with pytest.raises(LikelihoodError, match="suffix \\(40\\)"):
        log_likelihoods(model, [([1] * 20, [2] * 10)], suffixes=[[3] * 40])
    with pytest.raises(LikelihoodError, match="one \\(possibly empty\\) per pair"):
        log_likelihoods(model, [([1], [2]), ([1], [3])], suffixes=[[4]])
    ar = LLaDAModel(tiny_config(causal=True, max_sequence_length=32)).eval()
    with pytest.raises(LikelihoodError, match="cannot condition on tokens after"):
        log_likelihoods(ar, [([1], [2])], suffixes=[[3]])


@pytest.mark.parametrize("pairs,kwargs,match", [
    ([([1], [64])], {}, "the response holds token id 64, outside the model's vocabulary 0..63"),
    ([([-1], [2])], {}, "the prompt holds token id -1"),
    ([([1.7], [2])], {}, r"the prompt must be token ids \(integers\), got 1.7"),
    ([([1], [2.0])], {}, r"the response must be token ids \(integers\), got 2.0"),
    ([([1], torch.tensor([2.0]))], {}, "the response must be token ids .* torch.float32 tensor"),
    ([([1], "the cat")], {}, "not text: encode it with the tokenizer first"),
    ([], {}, "pairs is empty"),
    ({"prompt": [1], "response": [2]}, {}, "pairs must be a list of"),
    ([([1], [2], [3])], {}, r"pair 0 must be \(prompt ids, response ids\)"),
    ([([1], [2])], dict(cfg_scale=float("nan")), "cfg_scale must be a finite number"),
    ([([1], [2])], dict(cfg_scale=float("inf")), "cfg_scale must be a finite number"),
    ([([1], [2])], dict(mc_num=2.5), "mc_num must be an integer"),
    ([([1], [2])], dict(suffixes=[[99]]), "the suffix holds token id 99"),
])
def test_bad_ids_and_values_name_the_argument(model, pairs, kwargs, match):
    with pytest.raises(LikelihoodError, match=match):
        log_likelihoods(model, pairs, mc_num=kwargs.pop("mc_num", 2), **kwargs)


def test_one_pair_and_the_bound_check_their_input_too(model):
    with pytest.raises(LikelihoodError, match="token id 70"):
        log_likelihood(model, [1], [70])
    with pytest.raises(LikelihoodError, match="texts must be a non-empty list"):
        nll_bound(model, [])
    with pytest.raises(LikelihoodError, match="token id -3"):
        nll_bound(model, [[1, -3]])
    with pytest.raises(LikelihoodError, match="token id 64"):
        is_greedy(model, [1], [64])
    assert math.isfinite(log_likelihood(model, torch.tensor([1, 2]), torch.tensor([3]), mc_num=2).value)


@pytest.mark.parametrize("kwargs,match", [
    (dict(start=1.5), r"start must be an integer in 1\.\.3, got 1\.5"),
    (dict(start="1"), r"start must be an integer in 1\.\.3, got '1'"),
    (dict(start=True), r"start must be an integer in 1\.\.3, got True"),
    (dict(ids=None), r"ids must be a list of token ids \(or a 1-D tensor\), got NoneType"),
    (dict(ids=(i for i in [1, 2, 3])), r"ids must be a list of token ids \(or a 1-D tensor\), got generator"),
    (dict(ids=5), r"ids must be a list of token ids \(or a 1-D tensor\), got int"),
])
def test_next_token_logprobs_names_a_start_or_ids_of_the_wrong_type(model, kwargs, match):
    """These were TypeErrors from deep inside (or a float start indexing the sequence)."""
    with pytest.raises(LikelihoodError, match=match):
        next_token_logprobs(model, **{"ids": [1, 2, 3], **kwargs})


@pytest.mark.parametrize("pairs,kwargs,match", [
    ([([1], [2])], dict(generator=5), "generator must be a torch.Generator or None, got int"),
    ([([1], [2])], dict(generator="cpu"), "generator must be a torch.Generator or None, got str"),
    ([([1], [2])], dict(suffixes=[None]), r"pair 0: the suffix must be a list of token ids \(or a 1-D tensor\), "
                                          "got NoneType"),
    ([([1], [2])], dict(suffixes=5), r"suffixes must be a list with one list of token ids per pair, got int"),
    ([(None, [2])], {}, r"pair 0: the prompt must be a list of token ids \(or a 1-D tensor\), got NoneType"),
    ([([1], 7)], {}, r"pair 0: the response must be a list of token ids \(or a 1-D tensor\), got int"),
    ([([1], [2])], dict(masking=None), "masking must be 'exact_count' or 'bernoulli', got None"),
])
def test_log_likelihoods_names_arguments_of_the_wrong_type(model, pairs, kwargs, match):
    """generator, suffixes and the pairs' parts of the wrong type were TypeErrors or AttributeErrors."""
    with pytest.raises(LikelihoodError, match=match):
        log_likelihoods(model, pairs, mc_num=2, **kwargs)


def test_log_likelihoods_takes_no_mask_id_the_config_names_it(model):
    """The mask id comes from the model's config (an out-of-range one indexed past the embedding)."""
    with pytest.raises(TypeError, match="mask_id"):
        log_likelihoods(model, [([1], [2])], mc_num=2, mask_id=10**9)

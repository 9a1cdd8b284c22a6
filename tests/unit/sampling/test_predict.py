"""The prediction step: top-k, top-p, min-p, Gumbel sampling and tempered confidence against loops."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config
from support.sampling import MASK, FixedLogits

import llada.sampling.core as core
import llada.sampling.predict as predict
from llada.errors import GenerationError
from llada.model import LLaDAModel
from llada.sampling import SamplerOptions

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

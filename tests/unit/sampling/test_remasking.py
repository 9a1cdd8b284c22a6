"""Remasking rules (low-confidence, threshold, factor, quota) against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support.sampling import MASK, FixedLogits

import llada.sampling.core as core
from llada.sampling import REMASKING, SamplerOptions
from llada.sampling.core import select_factor


def test_factor_rule_matches_its_definition():
    conf = torch.tensor([[0.99, 0.9, 0.8, 0.5, float("-inf")]])
    masked = torch.tensor([[True, True, True, True, False]])
    # rank r (1-based) accepted when conf >= 1 - f/(r+1): f=0.5 -> 0.75, 0.833, 0.875, 0.9 ...
    assert select_factor(conf, masked, 0.5).tolist() == [[True, True, False, False, False]]
    assert select_factor(conf, masked, 1e-6).tolist() == [[True, False, False, False, False]]


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

"""The objectives against slow per-token loops, closed forms, and properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from llada.diffusion import (
    ar_loss,
    crop_length,
    forward_process,
    masked_cross_entropy,
    pretrain_loss,
    sample_t,
    sft_loss,
)
from llada.model import LLaDAModel

MASK = 63


class Recorder(torch.nn.Module):
    """Wraps a model and keeps the last input it saw, so a loop reference can reuse the noise."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen, self.logits = model, None, None

    def forward(self, ids, attention_mask=None):
        self.seen = ids.clone()
        self.logits = self.model(ids, attention_mask=attention_mask)
        return self.logits


def loop_pretrain_loss(logits, x0, noisy, t):
    total = 0.0
    B, L = x0.shape
    for b in range(B):
        for i in range(L):
            if noisy[b, i] == MASK:
                logp = torch.log_softmax(logits[b, i].double(), -1)[x0[b, i]]
                total += -logp.item() / t[b].item()
    return total / (B * L)


def test_pretrain_loss_matches_loop():
    model = Recorder(LLaDAModel(tiny_config()))
    x0 = torch.randint(0, 60, (4, 16))
    g = torch.Generator().manual_seed(1)
    out = pretrain_loss(model, x0, MASK, generator=g)
    g = torch.Generator().manual_seed(1)
    t = sample_t(4, generator=g)
    ref = loop_pretrain_loss(model.logits, x0, model.seen, t)
    assert out.loss.item() == pytest.approx(ref, rel=1e-6)
    assert out.num_masked.item() == (model.seen == MASK).sum().item()


class ContextFree(torch.nn.Module):
    """A predictor that ignores its input: fixed logits per position."""

    def __init__(self, L, V):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(L, V))

    def forward(self, ids, attention_mask=None):
        return self.table.expand(ids.shape[0], -1, -1)


def test_context_free_expectation_equals_mean_token_cross_entropy():
    """E_t,mask[Eq. 3] = (1/L) Σ_i CE_i when the predictor ignores context: E[1(masked)/t] = 1."""
    L, V = 8, 60
    model = ContextFree(L, V)
    x0 = torch.randint(0, V, (1, L))
    exact = F.cross_entropy(model.table, x0[0], reduction="mean").item()
    batch = x0.expand(20000, L)
    out = pretrain_loss(model, batch, MASK, generator=torch.Generator().manual_seed(0), antithetic=True)
    # per-sequence estimates, to get a standard error for the tolerance
    g = torch.Generator().manual_seed(0)
    noised = forward_process(batch, MASK, antithetic=True, generator=g)
    ce = F.cross_entropy(model.table, x0[0], reduction="none")
    per_seq = (noised.masked.float() * ce).sum(1) / noised.t / L
    se = per_seq.std().item() / math.sqrt(len(per_seq))
    assert out.loss.item() == pytest.approx(per_seq.mean().item(), rel=1e-5)
    assert abs(out.loss.item() - exact) < 4 * se
    # Why it is unbiased: the forward process masks each token with probability t, so the weight
    # 1(masked) / t has expectation E_t[P(masked | t) / t] = E_t[t / t] = 1 for every position.
    # Check it on the masks forward_process actually drew (a process masking with probability
    # 1 - t, or t², would give E_t[(1 - t) / t] ≈ 5.9 or E[t] = 0.5 here).
    weight = noised.masked.double() / noised.t.double()[:, None]  # (B, L)
    per_row = weight.mean(1)
    se_w = per_row.std().item() / math.sqrt(len(per_row))
    assert abs(per_row.mean().item() - 1.0) < 4 * se_w
    assert se_w < 0.02  # the check is tight enough to tell 1 from 0.5 or 5.9


def test_antithetic_t_is_stratified_and_lowers_variance():
    g = torch.Generator().manual_seed(3)
    t = sample_t(16, antithetic=True, generator=g)
    u = (t - 1e-3) / (1 - 1e-3)
    assert ((t >= 1e-3) & (t <= 1)).all()
    assert sorted((u * 16).floor().long().tolist()) == list(range(16))  # one per stratum
    # A predictor whose loss depends on t (it is surer of the answer the more context it sees),
    # as a trained model's does: stratifying t then lowers the variance of the batch loss.
    x0 = torch.randint(0, 60, (8, 128))

    class Oracle(torch.nn.Module):
        def forward(self, ids, attention_mask=None):
            visible = (ids != MASK).float().mean(1, keepdim=True)[..., None]  # (B, 1, 1)
            return F.one_hot(x0, 64).float() * 6 * visible

    def spread(anti):
        g = torch.Generator().manual_seed(0)
        vals = [pretrain_loss(Oracle(), x0, MASK, antithetic=anti, generator=g).loss.item() for _ in range(300)]
        return torch.tensor(vals).var().item()

    assert spread(True) < spread(False)


def test_forward_process_rate_and_maskable():
    x0 = torch.randint(0, 60, (4, 5000))
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    maskable = torch.ones_like(x0, dtype=torch.bool)
    maskable[:, :100] = False
    out = forward_process(x0, MASK, t=t, maskable=maskable, generator=torch.Generator().manual_seed(0))
    rate = out.masked[:, 100:].float().mean(1)
    assert torch.allclose(rate, t, atol=4 * math.sqrt(0.25 / 4900))
    assert not out.masked[:, :100].any()
    assert torch.equal(out.noisy_ids[~out.masked], x0[~out.masked])
    assert (out.noisy_ids[out.masked] == MASK).all()
    again = forward_process(x0, MASK, t=t, maskable=maskable, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.noisy_ids, again.noisy_ids)


def loop_sft_loss(logits, x0, noisy, t, response):
    per = []
    for b in range(x0.shape[0]):
        s = 0.0
        for i in range(x0.shape[1]):
            if noisy[b, i] == MASK:
                s += -torch.log_softmax(logits[b, i].double(), -1)[x0[b, i]].item() / t[b].item()
        per.append(s / max(int(response[b].sum()), 1))
    return sum(per) / len(per)


conversation = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=3)


@settings(max_examples=25, deadline=None)
@given(convs=st.lists(conversation, min_size=1, max_size=4), pad=st.integers(0, 4), seed=st.integers(0, 999))
def test_sft_never_masks_the_prompt(convs, pad, seed):
    """Random multi-turn conversations: (prompt, response) turn lengths; EOS padding is response."""
    rows, masks = [], []
    for turns in convs:
        ids, resp = [], []
        for p, r in turns:
            ids += [1] * p + [2] * r
            resp += [False] * p + [True] * r
        rows.append(ids)
        masks.append(resp)
    L = max(map(len, rows)) + pad
    x0 = torch.full((len(rows), L), 62)  # EOS padding
    response = torch.ones((len(rows), L), dtype=torch.bool)
    for b, (ids, resp) in enumerate(zip(rows, masks, strict=True)):
        x0[b, :len(ids)] = torch.tensor(ids)
        response[b, :len(ids)] = torch.tensor(resp)
    x0 = torch.where(response, torch.randint(0, 60, x0.shape, generator=torch.Generator().manual_seed(seed)), x0)
    x0[:, -pad or L:] = 62 if pad else x0[:, -pad or L:]
    model = Recorder(ContextFree(L, 64))
    out = sft_loss(model, x0, response, MASK, generator=torch.Generator().manual_seed(seed))
    noisy = model.seen
    assert torch.equal(noisy[~response], x0[~response])
    t = sample_t(len(rows), generator=torch.Generator().manual_seed(seed))
    assert out.loss.item() == pytest.approx(loop_sft_loss(model.logits, x0, noisy, t, response), rel=1e-5)


def test_sft_learns_eos_padding():
    x0 = torch.tensor([[5, 6, 7, 8, 62, 62, 62, 62]])
    response = torch.tensor([[False, False, True, True, True, True, True, True]])
    out = forward_process(x0, MASK, t=torch.tensor([1.0]), maskable=response)
    assert out.masked[0, 4:].all() and not out.masked[0, :2].any()


def test_ar_loss_matches_loop_and_causal_model():
    model = LLaDAModel(tiny_config(causal=True))
    x0 = torch.randint(0, 60, (2, 10))
    loss_mask = torch.zeros_like(x0, dtype=torch.bool)
    loss_mask[:, 4:] = True
    out = ar_loss(model, x0, loss_mask=loss_mask)
    logits = model(x0)
    vals = [-torch.log_softmax(logits[b, i - 1].double(), -1)[x0[b, i]].item()
            for b in range(2) for i in range(4, 10)]
    assert out.loss.item() == pytest.approx(sum(vals) / len(vals), rel=1e-6)
    # a causal model's prediction at i does not depend on tokens after i
    x1 = x0.clone()
    x1[:, -1] = (x1[:, -1] + 1) % 60
    assert torch.equal(model(x1)[:, :-1], logits[:, :-1])


def test_crop_length():
    """LLaDA's variable-length batches: seq_len, or with probability prob a length ~ U{1..seq_len}."""
    g = torch.Generator().manual_seed(0)
    assert all(crop_length(20, 0.0, g) == 20 for _ in range(50))
    lengths = [crop_length(20, 1.0, g) for _ in range(2000)]
    assert min(lengths) >= 1 and max(lengths) <= 20 and len(set(lengths)) == 20  # every length reachable
    assert abs(sum(lengths) / len(lengths) - 10.5) < 0.5  # the mean of U{1..20}
    cropped = sum(crop_length(20, 0.25, g) < 20 for _ in range(4000)) / 4000
    assert abs(cropped - 0.25 * 19 / 20) < 0.03  # prob 0.25, less the draws that land on 20 itself
    a = [crop_length(20, 0.5, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert len(set(a)) == 1  # a pure function of the generator's state
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        crop_length(20, 2.0)


def test_padding_is_never_masked_and_not_counted():
    model = Recorder(LLaDAModel(tiny_config()))
    x0 = torch.randint(0, 60, (2, 12))
    am = torch.ones_like(x0)
    am[1, :5] = 0
    out = pretrain_loss(model, x0, MASK, attention_mask=am, t=torch.tensor([1.0, 1.0]))
    assert not (model.seen[1, :5] == MASK).any()
    assert out.num_masked.item() == am.sum().item()


def test_pretrain_loss_with_padding_matches_loop():
    """Eq. 3 on left- and right-padded rows: Σ over masked real tokens of CE / t, divided by the
    number of real tokens (not B · L), against a per-token loop over the same masks."""
    model = Recorder(LLaDAModel(tiny_config()))
    B, L, PAD = 3, 12, 62
    x0 = torch.randint(0, 60, (B, L))
    am = torch.ones_like(x0)
    am[1, :5] = 0  # left padded
    am[2, 9:] = 0  # right padded
    x0[am == 0] = PAD
    t = torch.tensor([0.3, 0.6, 1.0])  # fixed t: row 2 masks every real token
    out = pretrain_loss(model, x0, MASK, attention_mask=am, t=t, generator=torch.Generator().manual_seed(5))

    # The same uniforms, redrawn: a token is masked where u < t and it is a real token.
    u = torch.rand((B, L), generator=torch.Generator().manual_seed(5))
    total, real, masked = 0.0, 0, 0
    for b in range(B):
        for i in range(L):
            if am[b, i] == 0:
                assert model.seen[b, i] == PAD  # padding is never masked
                continue
            real += 1
            if u[b, i] < t[b]:
                assert model.seen[b, i] == MASK
                masked += 1
                total += -torch.log_softmax(model.logits[b, i].double(), -1)[x0[b, i]].item() / t[b].item()
            else:
                assert model.seen[b, i] == x0[b, i]
    assert real == 28 and 0 < masked < real
    assert out.loss.item() == pytest.approx(total / real, rel=1e-6)
    assert out.loss.item() != pytest.approx(total / (B * L), rel=1e-3)  # the denominator matters
    assert out.num_masked.item() == masked
    assert out.token_nll.item() == pytest.approx(
        sum(-torch.log_softmax(model.logits[b, i].double(), -1)[x0[b, i]].item()
            for b in range(B) for i in range(L) if model.seen[b, i] == MASK) / masked, rel=1e-6)


def test_pretrain_loss_from_logits_hand_masks():
    """pretrain_loss_from_logits on a hand-made NoisedBatch: masks and t chosen here, no RNG."""
    from llada.diffusion import NoisedBatch, pretrain_loss_from_logits

    B, L, V = 2, 5, 7
    logits = torch.randn(B, L, V)
    x0 = torch.randint(0, V, (B, L))
    am = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    masked = torch.tensor([[False, False, True, False, True], [True, False, False, True, True]])
    t = torch.tensor([0.5, 0.25])
    noised = NoisedBatch(torch.where(masked, MASK, x0), masked, t)
    out = pretrain_loss_from_logits(logits, x0, noised, am)

    def ce(b: int, i: int) -> float:  # cross-entropy of one position, with math
        return -math.log(math.exp(logits[b, i, x0[b, i]].item()) / sum(math.exp(v) for v in logits[b, i].tolist()))

    expected = (ce(0, 2) / 0.5 + ce(0, 4) / 0.5 + (ce(1, 0) + ce(1, 3) + ce(1, 4)) / 0.25) / 8  # 8 real tokens
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.num_tokens.item() == 5
    no_pad = pretrain_loss_from_logits(logits, x0, noised)  # without a mask: B · L = 10
    assert no_pad.loss.item() == pytest.approx(expected * 8 / 10, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_masked_cross_entropy_matches_torch_in_chunks(monkeypatch, dtype):
    """Per-position cross-entropy and its gradient equal torch's cross_entropy on the upcast logits,
    row by row, when the rows are processed in several chunks (a ragged last one); unmasked
    positions give exactly zero loss and zero gradient."""
    import llada.diffusion as diffusion

    monkeypatch.setattr(diffusion, "_CE_CHUNK_ELEMENTS", 7 * 13)  # 7 rows per chunk, 33 rows
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 11, 13, dtype=torch.float64)).to(dtype).requires_grad_()
    targets = torch.randint(0, 13, (3, 11))
    masked = torch.rand(3, 11) < 0.5
    weights = torch.randn(3, 11, dtype=torch.float64)
    ce = masked_cross_entropy(logits, targets, masked)
    assert ce.dtype == torch.promote_types(dtype, torch.float32)
    (grad,) = torch.autograd.grad((ce.double() * weights).sum(), logits)
    upcast = logits.detach().to(ce.dtype).requires_grad_()
    want = torch.where(masked, F.cross_entropy(upcast.transpose(1, 2), targets, reduction="none"), 0.0)
    (want_grad,) = torch.autograd.grad((want.double() * weights).sum(), upcast)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(ce, want, atol=tol, rtol=0)
    assert torch.allclose(grad.to(want_grad.dtype), want_grad, atol=tol if dtype != torch.bfloat16 else 1e-2, rtol=0)
    assert (grad[~masked] == 0).all() and (ce[~masked] == 0).all()
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(lambda x: masked_cross_entropy(x, targets, masked), (logits.detach().requires_grad_(),))

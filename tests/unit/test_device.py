"""The checks that matter on an accelerator, on whatever device `LLADA_TEST_DEVICE` names.

    pytest tests/unit/test_device.py                                    # CPU, float32 (the default suite)
    LLADA_TEST_DEVICE=cuda LLADA_TEST_DTYPE=bfloat16 pytest --noconftest tests/unit/test_device.py   # a GPU

Every tensor the samplers and estimators make must live on the model's device, and the results
must agree with a float64 CPU run within the tolerance of the dtype under test. The file imports
only torch and llada's core (no conftest, no CLI/serve/eval extras), so it runs on a bare GPU
machine (`make test-gpu`, `bench/gpu.sh`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator

import pytest
import torch
from host_sync import syncs_on

from llada.config import preset
from llada.diffusion import forward_process, pretrain_loss_from_logits, sft_loss_from_logits
from llada.likelihood import log_likelihoods
from llada.model import LLaDAModel
from llada.sampling import SamplerOptions, sample
from llada.sampling.autoregressive import generate_autoregressive
from llada.sampling.core import denoise

DEVICE = torch.device(os.environ.get("LLADA_TEST_DEVICE", "cpu"))


DTYPE = getattr(torch, os.environ.get("LLADA_TEST_DTYPE", "float32"))


# agreement with float64 on the CPU: float32 differs in rounding only; bfloat16 keeps 8 bits of mantissa
TOL = {torch.float32: 1e-4, torch.float64: 1e-9, torch.bfloat16: 5e-2, torch.float16: 1e-2}[DTYPE]


MASK, EOS = 63, 62


pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


def _config(**overrides):
    ids = dict(vocab_size=64, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS, bos_token_id=61,
               eot_token_id=60, max_sequence_length=128)
    return preset("debug", **{**ids, **overrides})


def _models(causal: bool = False) -> tuple[LLaDAModel, LLaDAModel]:
    """The same weights twice: float64 on the CPU (the reference) and DTYPE on DEVICE."""
    torch.manual_seed(0)
    ref = LLaDAModel(_config(causal=causal)).double().eval()
    with torch.no_grad():  # larger weights than the init: predictions that depend on the input
        for w in ref.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.2)
    test = LLaDAModel(_config(causal=causal)).eval()
    test.load_state_dict(ref.state_dict())
    return ref, test.to(device=DEVICE, dtype=DTYPE)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    assert (a - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item()), (a - b).abs().max().item()


def test_forward_matches_float64_on_the_cpu():
    ref, test = _models()
    ids = torch.randint(0, 55, (2, 24))
    am = torch.ones_like(ids)
    am[1, :5] = 0
    out = test(ids.to(DEVICE), am.to(DEVICE))
    assert out.device.type == DEVICE.type and out.dtype == DTYPE
    _close(out, ref(ids, am))


MODES = {"fixed": {}, "threshold": {"threshold": 0.3}, "factor": {"factor": 1.0}, "prefix": {"cache": "prefix"},
         "dual": {"cache": "dual", "threshold": 0.3}, "cfg": {"cfg_scale": 1.0},
         "sampled": {"temperature": 1.0, "remasking": "random", "seed": 3}}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_sampler_mode_runs_on_the_device(mode):
    _, test = _models()
    prompt = torch.randint(0, 55, (2, 6))
    am = torch.ones_like(prompt)
    am[0, :2] = 0  # rows of different lengths, left padded
    opts = SamplerOptions(gen_length=16, steps=8, block_length=8, **MODES[mode])
    out = sample(test, prompt.to(DEVICE), opts, attention_mask=am.to(DEVICE))
    assert out.sequences.device.type == DEVICE.type
    assert not (out.responses == MASK).any() and (out.responses < 64).all()
    if mode == "sampled":  # the seed makes it reproducible on this device
        assert torch.equal(out.sequences, sample(test, prompt.to(DEVICE), opts, attention_mask=am.to(DEVICE)).sequences)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_refreshed_every_step_equals_no_cache_on_the_device(cache):
    _, test = _models()
    prompt = torch.randint(0, 55, (2, 6)).to(DEVICE)
    plain = sample(test, prompt, gen_length=16, steps=8, block_length=8)
    canvas = torch.cat([prompt, torch.full((2, 16), MASK, device=DEVICE)], 1)
    opts = SamplerOptions(gen_length=16, block_length=8, steps=8, cache=cache)
    for _ in denoise(test, canvas, opts, start=6, refresh_every_step=True):
        pass
    assert torch.equal(canvas, plain.sequences)


def test_greedy_tokens_agree_with_float64_on_the_cpu():
    """Token agreement of the reverse process across devices and dtypes (bfloat16 may part ways at
    a near-tie: then the answers must still agree up to that first differing step's block)."""
    ref, test = _models()
    prompt = torch.randint(0, 55, (2, 6))
    opts = SamplerOptions(gen_length=16, steps=16, block_length=8)
    want = sample(ref, prompt, opts).responses
    got = sample(test, prompt.to(DEVICE), opts).responses.cpu()
    agree = (want == got).float().mean().item()
    assert agree == 1.0 if DTYPE in (torch.float32, torch.float64) else agree >= 0.75, agree


def test_autoregressive_decoding_on_the_device():
    ref, test = _models(causal=True)
    prompt = torch.randint(0, 55, (2, 6))
    got = generate_autoregressive(test, prompt.to(DEVICE), gen_length=10).responses
    assert got.device.type == DEVICE.type
    if DTYPE in (torch.float32, torch.float64):
        assert torch.equal(got.cpu(), generate_autoregressive(ref, prompt, gen_length=10).responses)


def test_likelihood_on_the_device_matches_the_cpu():
    ref, test = _models()
    pairs = [([1, 2, 3, 4], [5, 6, 7]), ([9, 8], [7, 6, 5, 4])]
    want = log_likelihoods(ref, pairs, mc_num=16, batch_size=8, generator=torch.Generator().manual_seed(1))
    got = log_likelihoods(test, pairs, mc_num=16, batch_size=8, generator=torch.Generator().manual_seed(1))
    for w, g in zip(want, got, strict=True):
        assert abs(w.value - g.value) <= 20 * TOL * max(1.0, abs(w.value)), (w.value, g.value)


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_training_loss_and_gradients_on_the_device(stage):
    """Eq. 3 / Eq. 5 on the device with the noise of the CPU reference: same loss, same gradients."""
    ref, test = _models()
    ref.train()
    test.train()
    x0 = torch.randint(0, 55, (4, 32))
    response = torch.zeros_like(x0, dtype=torch.bool)
    response[:, 12:] = True
    noised = forward_process(x0, MASK, maskable=response if stage == "sft" else None,
                             generator=torch.Generator().manual_seed(2))
    losses = []
    for model, device in ((ref, "cpu"), (test, DEVICE)):
        local = type(noised)(*(t.to(device) for t in noised))
        logits = model(local.noisy_ids)
        if stage == "sft":
            out = sft_loss_from_logits(logits, x0.to(device), local, response.to(device))
        else:
            out = pretrain_loss_from_logits(logits, x0.to(device), local)
        out.loss.backward()
        losses.append(out.loss)
    _close(losses[1], losses[0])
    grad_ref = ref.transformer.wte.weight.grad
    grad_dev = test.transformer.wte.weight.grad
    assert grad_dev is not None and torch.isfinite(grad_dev.float()).all()
    if DTYPE != torch.bfloat16:  # bfloat16 gradients: finite is the check
        _close(grad_dev, grad_ref)


# Host synchronisations, counted on this device (`host_sync.py`: torch's report on CUDA; on a CPU,
# the operators that would wait for a GPU). Fixed-step sampling never waits inside its step loop.
FIXED_STEPS = {"greedy": {}, "dual cache": {"cache": "dual"}, "prefix cache, cfg": {"cache": "prefix", "cfg_scale": 1.0},
               "temperature": {"temperature": 0.7}, "random remasking": {"remasking": "random"},
               "dream schedule, alg_temp": {"schedule": "dream", "alg_temp": 0.5},
               "eos kept last": {"logits_eos_inf": True, "confidence_eos_eot_inf": True}}


# ... and when the step count depends on the predictions, it checks once per step (block diffusion:
# and once as each block starts)
DATA_DEPENDENT = {"threshold": {"threshold": 0.5}, "factor": {"factor": 1.0},
                  "threshold, dual cache": {"threshold": 0.5, "cache": "dual"},
                  "block diffusion": {"block_causal": True},
                  "block diffusion, threshold, prefix cache": {"block_causal": True, "threshold": 0.5, "cache": "prefix"},
                  "token editing": {"block_causal": True, "editing_threshold": 0.5}}


def _count_step_syncs(mode: dict) -> tuple[int, int, int, list[str]]:
    """(syncs, steps, blocks, what synced) of one padded, batched call after a warm-up call."""
    _, test = _models()
    am = torch.ones(2, 38, dtype=torch.long, device=DEVICE)
    am[0, :2] = 0  # rows of different lengths, left padded

    def run() -> Iterator:
        canvas = torch.cat([torch.randint(0, 55, (2, 6)), torch.full((2, 32), MASK)], 1).to(DEVICE)
        opts = SamplerOptions(gen_length=32, block_length=16, steps=16, **mode)
        return denoise(test, canvas, opts, start=6, attention_mask=am, generator=torch.Generator(DEVICE).manual_seed(0))

    deque(run(), maxlen=0)  # the first call may build what later ones reuse
    steps = run()
    with syncs_on(DEVICE) as syncs:
        states = list(steps)
    return syncs.count, len(states), len({s.block for s in states}), syncs.events


@pytest.mark.parametrize("mode", list(FIXED_STEPS))
def test_fixed_step_loop_has_no_host_sync(mode):
    count, steps, _, events = _count_step_syncs(FIXED_STEPS[mode])
    assert steps == 16 and count == 0, events


@pytest.mark.parametrize("mode", list(DATA_DEPENDENT))
def test_data_dependent_loops_sync_once_per_step(mode):
    count, steps, blocks, events = _count_step_syncs(DATA_DEPENDENT[mode])
    allowed = steps + (blocks if DATA_DEPENDENT[mode].get("block_causal") else 0)
    assert 0 < count <= allowed, (count, steps, blocks, events)


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_training_loss_and_backward_have_no_host_sync(stage):
    """The loss of a micro-batch already on the device, forward and backward, never waits for it
    (selecting the masked rows, `logits[masked]`, would: their count reaches the host)."""
    _, test = _models()
    test.train()
    x0 = torch.randint(0, 55, (2, 32), device=DEVICE)
    response = (torch.arange(32, device=DEVICE) >= 8)[None].expand(2, 32)
    noised = forward_process(x0, MASK, maskable=response if stage == "sft" else None,
                             generator=torch.Generator(DEVICE).manual_seed(0))
    with syncs_on(DEVICE) as syncs:
        logits = test(noised.noisy_ids)
        if stage == "sft":
            out = sft_loss_from_logits(logits, x0, noised, response)
        else:
            out = pretrain_loss_from_logits(logits, x0, noised)
        out.loss.backward()
    assert syncs.count == 0, syncs.events


def test_likelihood_batches_do_not_wait_for_the_device():
    """Eq. 6 selects the masked positions on the host (the model takes their indices): the model
    never synchronises, and a call synchronises the same number of times whatever its batch count
    (on CUDA: once, to bring the sums back)."""
    _, test = _models()
    pairs = [([1, 2, 3, 4], [5, 6, 7]), ([9, 8], [7, 6, 5, 4])]
    counts = []
    for batch_size in (16, 2):  # 2 and 16 forward passes
        log_likelihoods(test, pairs, mc_num=16, batch_size=batch_size, cfg_scale=1.0)  # warm-up
        with syncs_on(DEVICE) as syncs:
            log_likelihoods(test, pairs, mc_num=16, batch_size=batch_size, cfg_scale=1.0,
                            generator=torch.Generator().manual_seed(1))
        assert not [e for e in syncs.events if "model.py" in e], syncs.events
        counts.append(syncs.count)
    if DEVICE.type == "cuda":
        assert counts[0] == counts[1] <= 1, counts

"""Length-like options checked against the model before anything is allocated: the canvas
(prompt + gen_length; block diffusion: whole blocks of block_length from the sequence start) must
fit max_sequence_length, on the Python API and the command line. (The server's and lm-eval's
refusals are in integration/test_server.py and unit/evaluation/test_harness.py.)"""

from __future__ import annotations

import re

import pytest
import torch
from support.cli import _one_error_line

import llada
from llada.cli import main
from llada.errors import GenerationError
from llada.sampling import SamplerOptions


def _slow_canvas(prompt_length: int, o: SamplerOptions) -> int:
    """The canvas length by walking block boundaries one at a time (the reference for `canvas_length`)."""
    end = prompt_length + o.gen_length
    if not o.block_causal:
        return end
    boundary = 0
    while boundary < end:
        boundary += o.block_length
    return boundary


@pytest.mark.parametrize("o", [SamplerOptions(gen_length=8, block_length=4),
                               SamplerOptions(gen_length=8, block_length=32, steps=8, block_causal=True),
                               SamplerOptions(gen_length=40, block_length=32, steps=40, block_causal=True),
                               SamplerOptions(gen_length=5, block_length=5, steps=5, block_causal=True)])
def test_canvas_length_and_usable_positions(o):
    for prompt in (1, 3, 31, 32, 33, 100):
        assert o.canvas_length(prompt) == _slow_canvas(prompt, o)
        limit = 128
        usable = max(n for n in range(limit + 1) if not o.block_causal or n % o.block_length == 0)
        assert o.usable_positions(limit) == usable
        fits = _slow_canvas(prompt, o) <= limit
        if fits:
            o.check_room(prompt, limit)
        else:
            with pytest.raises(GenerationError, match="exceeds the model's max_sequence_length 128"):
                o.check_room(prompt, limit)


@pytest.mark.parametrize("options,prompt,message", [
    (SamplerOptions(gen_length=32, block_length=1_000_000, steps=32, block_causal=True), 3,
     "block_length 1000000 exceeds the model's max_sequence_length 128: block diffusion runs whole blocks, "
     "so block_length must be in 1..128"),
    (SamplerOptions(gen_length=100, block_length=48, steps=100, block_causal=True), 3,
     "prompt (3 tokens) + gen_length (100) rounded up to whole blocks of 48 = 144 exceeds the model's "
     "max_sequence_length 128; gen_length must be in 1..93 after this prompt"),
    (SamplerOptions(gen_length=10**9, block_length=None), 3,
     "prompt (3 tokens) + gen_length (1000000000) = 1000000003 exceeds the model's max_sequence_length 128; "
     "gen_length must be in 1..125 after this prompt"),
    (SamplerOptions(gen_length=8, block_length=8), 128,
     "prompt (128 tokens) + gen_length (8) = 136 exceeds the model's max_sequence_length 128; shorten the prompt"),
])
def test_check_room_names_the_field_the_value_and_the_range(options, prompt, message):
    with pytest.raises(GenerationError, match=re.escape(message)) as info:
        options.check_room(prompt, 128)
    assert "\n" not in str(info.value)
    SamplerOptions(gen_length=100, block_length=64, steps=100, block_causal=True).check_room(3, 128)  # 2 blocks: fits


@pytest.mark.parametrize("overrides,needle", [
    (dict(block_causal=True, block_length=1_000_000, gen_length=8, steps=8), "block_length 1000000"),
    (dict(block_causal=True, block_length=2048, gen_length=8, steps=8), "block_length 2048"),  # ran ~100 s before
    (dict(gen_length=10**9), "gen_length (1000000000)"),
    (dict(gen_length=10**9, block_length=None, steps=4), "gen_length (1000000000)"),
])
def test_sample_refuses_a_canvas_past_the_model_before_allocating(bundles, overrides, needle):
    """block_length 1000000 with block_causal tried to allocate a terabyte (a 10^6 x 10^6 attention
    mask); a refusal means the sampler never built its canvas."""
    model = bundles["diffusion"].model
    for call in (llada.sample, llada.sample_steps):
        with pytest.raises(GenerationError, match=re.escape(needle)) as info:
            call(model, torch.tensor([[1, 2, 3]]), **overrides)
        assert "max_sequence_length" in str(info.value) and "\n" not in str(info.value)


def test_block_diffusion_within_the_limit_still_samples(bundles):
    """A canvas of exactly the model's positions is allowed, one position more is not."""
    model = bundles["diffusion"].model
    limit = model.config.max_sequence_length
    o = SamplerOptions(block_causal=True, block_length=limit // 2, gen_length=4, steps=4)
    prompt = torch.ones(1, limit - 4, dtype=torch.long)
    assert llada.sample(model, prompt, o).sequences.shape == (1, limit)
    with pytest.raises(GenerationError, match=f"gen_length must be in 1..{limit // 2 - 1} after this prompt"):
        llada.sample(model, torch.ones(1, limit // 2 + 1, dtype=torch.long), o.replace(gen_length=limit // 2))


@pytest.mark.parametrize("flags,needle", [
    (["--gen_length", str(10**9)], "gen_length (1000000000)"),
    (["--gen_length", "8", "--steps", "8", "--block_causal", "true", "--block_length", "1000000"],
     "block_length 1000000 exceeds the model's max_sequence_length"),
])
def test_generate_command_refuses_lengths_past_the_model_in_one_line(dirs, capsys, flags, needle):
    assert main(["generate", "the cat", "--model", str(dirs["diffusion"]), "--device", "cpu", *flags]) == 2
    line = _one_error_line(capsys.readouterr().err, "generate")
    assert needle in line and "max_sequence_length" in line

"""SamplerOptions: the paper's defaults, validation naming the field, presets and fitting."""

from __future__ import annotations

import re

import pytest

from llada.errors import GenerationError
from llada.sampling import (
    SAMPLER_PRESETS,
    SamplerOptions,
    preset,
)


def test_defaults_are_the_papers():
    o = SamplerOptions()
    assert (o.gen_length, o.num_steps, o.block_size, o.remasking) == (128, 128, 32, "low_confidence")
    assert (o.temperature, o.cfg_scale, o.threshold, o.cache) == (0.0, 0.0, None, None)


@pytest.mark.parametrize("changes,field", [
    (dict(steps=0), "steps"), (dict(gen_length=-4), "gen_length"), (dict(block_length=24), "block_length"),
    (dict(steps=6), "number of blocks"), (dict(temperature=-1.0), "temperature"), (dict(cfg_scale=-0.5), "cfg_scale"),
    (dict(remasking="loudest"), "remasking"), (dict(threshold=1.5), "threshold"), (dict(factor=0.0), "factor"),
    (dict(threshold=0.9, factor=1.0), "threshold or factor"), (dict(cache="triple"), "cache"),
    (dict(seed=-1), "seed"), (dict(stepz=3), "unknown sampler option"), (dict(steps="x"), "steps"),
])
def test_bad_options_name_the_field(changes, field):
    with pytest.raises(GenerationError, match=field):
        SamplerOptions().replace(**changes)


def test_from_dict_reads_strings_presets_and_round_trips():
    o = SamplerOptions.from_dict({"preset": "fast", "gen_length": "64", "early_exit": "true", "seed": "3"})
    assert (o.threshold, o.cache, o.gen_length, o.early_exit, o.seed) == (0.9, "dual", 64, True, 3)
    assert SamplerOptions.from_dict(o.to_dict()) == o
    assert SamplerOptions.from_dict({"cache": "none", "steps": "None"}) == SamplerOptions()
    with pytest.raises(GenerationError, match="unknown sampler preset 'fastest'"):
        SamplerOptions.from_dict({"preset": "fastest"})


def test_presets():
    assert set(SAMPLER_PRESETS) >= {"reference", "fast", "quality"}
    ref = preset("reference")  # LLaDA generate.py's signature defaults
    assert (ref.gen_length, ref.num_steps, ref.block_size) == (128, 128, 128)
    assert preset("quality").num_steps == preset("quality").gen_length  # one token per step
    assert preset("fast").replace(threshold=0.5).threshold == 0.5  # an explicit option wins


def test_fitted_rounds_a_requested_length():
    o = SamplerOptions(steps=64, block_length=32)
    assert o.fitted(50).explicit().to_dict() | {} == o.replace(gen_length=64, steps=64).explicit().to_dict()
    assert o.fitted(10).block_size == 10 and o.fitted(10).num_steps % o.fitted(10).num_blocks == 0
    assert SamplerOptions().fitted(8, steps=8, block_length=4).to_dict()["steps"] == 8
    with pytest.raises(GenerationError, match="steps"):
        SamplerOptions().fitted(8, steps=0)


@pytest.mark.parametrize("changes,needle", [
    (dict(gen_length=32, block_length=32, steps=10**9), "steps (1000000000) must be at most gen_length (32)"),
    (dict(steps=256), "steps (256) must be at most gen_length (128)"),
    (dict(block_causal=True, gen_length=8, steps=9), "steps (9) must be at most gen_length (8)"),
    (dict(max_post_steps=10**9), "max_post_steps must be an integer in 0..1024, got 1000000000"),
    (dict(max_post_steps="1e9"), "max_post_steps must be an integer in 0..1024, got 1000000000"),
])
def test_more_steps_than_positions_are_refused(changes, needle):
    """A step decodes at least one position: steps above gen_length ran 10**9 steps (a hang); the
    editing steps of a block are capped (LLaDA 2.1 uses 16)."""
    with pytest.raises(GenerationError, match=re.escape(needle)):
        SamplerOptions().replace(**changes)
    with pytest.raises(GenerationError, match=re.escape(needle)):
        SamplerOptions.from_dict(changes)


def test_the_reference_preset_takes_any_length_and_fitting_caps_steps():
    """`--preset reference --gen_length 64` (one token per step) and a length asked for below the
    options' steps (a request's max_tokens, lm-eval's max_gen_toks, max_new_tokens) still work:
    the steps are capped at one per position, which at temperature 0 gives the same tokens."""
    assert SamplerOptions.from_dict({"preset": "reference", "gen_length": 64}).num_steps == 64
    o = SamplerOptions(gen_length=256, steps=256, block_length=32)
    assert (o.fitted(16).gen_length, o.fitted(16).num_steps) == (16, 16)
    assert SamplerOptions(block_causal=True, steps=64, gen_length=64).fitted(8).num_steps == 8


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

"""Sampling: `SamplerOptions`, the one entry point `sample` / `sample_steps`, and the text layer.

    from llada.sampling import SamplerOptions, sample, sample_text
"""

from llada.sampling.api import SAMPLERS, generate, sample, sample_steps
from llada.sampling.core import GenerateOutput, GenerateStats, StepState, denoise, infill
from llada.sampling.options import SAMPLER_PRESETS, SamplerOptions, preset
from llada.sampling.remasking import REMASKING, register
from llada.sampling.text import encode_prompts, sample_text, stream_text

__all__ = ["REMASKING", "SAMPLERS", "SAMPLER_PRESETS", "GenerateOutput", "GenerateStats", "SamplerOptions",
           "StepState", "denoise", "encode_prompts", "generate", "infill", "preset", "register", "sample",
           "sample_steps", "sample_text", "stream_text"]

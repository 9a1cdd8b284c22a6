"""The reverse process over token ids (`generate`, `infill`, `denoise`) and its text layer."""

from llada.sampling.core import GenerateOutput, GenerateStats, StepState, denoise, generate, infill
from llada.sampling.remasking import REMASKING, register
from llada.sampling.text import encode_prompts, generate_text, stream_text

__all__ = ["REMASKING", "GenerateOutput", "GenerateStats", "StepState", "denoise", "encode_prompts", "generate",
           "generate_text", "infill", "register", "stream_text"]

"""A tiny model saved for the lm-eval adapter tests (unit/evaluation/, integration/test_lm_eval_runs.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from support.tiny import make_word_tokenizer, tiny_config

import llada
from llada.model import LLaDAModel

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "who", "what", "is", "."]


def _save_model(path: Path, causal: bool) -> Path:
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config(causal=causal, max_sequence_length=64))
    with torch.no_grad():
        model.transformer.ff_out.weight.mul_(10)
    llada.save(path, model, make_word_tokenizer(WORDS))
    return path

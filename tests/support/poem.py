"""Invented couplets and a tiny model directory for the poem tests (unit and integration)."""

from __future__ import annotations

from pathlib import Path

import torch
from support.tiny import make_word_tokenizer, tiny_config

import llada
from llada.model import LLaDAModel
from llada.tokenizer import CHAT_TEMPLATE

COUPLETS = [
    {"first": "春风吹绿柳", "second": "细雨润红花", "source": "invented 1"},
    {"first": "山高云自在", "second": "水远月长明", "source": "invented 2"},
    {"first": "孤舟横野渡", "second": "老树立寒烟", "source": "invented 3"},
]


def _tiny_model_dir(path: Path) -> Path:
    # the answer lines are whole words of this tokenizer, so the model could in principle emit them
    words = ["user", "assistant"] + [c[k] for c in COUPLETS for k in ("first", "second")]
    tok = make_word_tokenizer(words)
    tok.chat_template = CHAT_TEMPLATE  # LLaDA's, as our trained tokenizers carry it
    torch.manual_seed(0)
    llada.save(path, LLaDAModel(tiny_config(max_sequence_length=64)), tok)
    return path

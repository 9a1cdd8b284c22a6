"""The tiny diffusion and autoregressive models of the sampling API tests (unit/sampling/test_api.py,
integration/test_surfaces.py) and the helpers they share."""

from __future__ import annotations

import torch

from llada.config import preset as model_preset
from llada.model import LLaDAModel
from llada.tokenizer import CHAT_TEMPLATE, config_ids

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "what is two plus two", "four is the answer"] * 20


def _model(tok, causal: bool) -> LLaDAModel:
    torch.manual_seed(1 if causal else 0)
    model = LLaDAModel(model_preset("debug", causal=causal, **config_ids(tok))).eval()
    with torch.no_grad():  # larger weights than the init, so that answers depend on the prompt
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.2)
    return model


def _chat_ids(tok, messages):
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def _copy_with(dirs, tmp_path, template: str | None = None, normalizer: str | None = None):
    import json
    import shutil

    root = tmp_path / "m"
    shutil.copytree(dirs["diffusion"], root)
    if template is not None:
        path = root / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "chat_template": template + CHAT_TEMPLATE}))
    if normalizer is not None:
        path = root / "tokenizer.json"
        data = json.loads(path.read_text())
        data["normalizer"] = {"type": "Replace", "pattern": {"Regex": normalizer}, "content": "b"}
        path.write_text(json.dumps(data))
    return root

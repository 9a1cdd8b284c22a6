"""Shared fixtures: tiny configs and a tiny word-level tokenizer with LLaDA's special tokens, the fixtures
that several test modules use, and the `integration` marker on everything under tests/integration/."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from support.api import TEXTS, _model
from support.checkpoint import LLADA_STYLE_CONFIG, _FakeHfApi, _random_llada_state, _write_llada_dir
from support.families import _random_state, _tiny_dream_config, _write_dream_tokenizer
from support.moe_families import TINY_LLADA2, TINY_LLADA_MOE, _public_dir
from support.poem import COUPLETS
from support.tiny import SPECIALS, make_word_tokenizer, tiny_config
from support.train import _cfg

import llada
from llada.config import ModelConfig, preset
from llada.data.world import World
from llada.families import FAMILIES
from llada.model import LLaDAModel
from llada.tokenizer import config_ids, train_tokenizer
from llada.training.trainer import Trainer

__all__ = ["ROOT", "SPECIALS", "TESTS", "make_word_tokenizer", "tiny_config"]

TESTS = Path(__file__).resolve().parent  # helper scripts run in subprocesses live here
ROOT = TESTS.parent  # the repository: README.md, configs/, .ref/


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is marked `integration` (`make test-fast` leaves it out)."""
    integration = TESTS / "integration"
    for item in items:
        if integration in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def config() -> ModelConfig:
    return tiny_config()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def word_tokenizer():
    return make_word_tokenizer(["the", "cat", "sat", "on", "mat", "a", "dog", "ran"])


# The sampling API's diffusion and autoregressive model directories (unit/sampling/test_api.py,
# integration/test_surfaces.py).
@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    root = tmp_path_factory.mktemp("api")
    for name, causal in (("diffusion", False), ("ar", True)):
        llada.save(root / name, _model(tok, causal), tok)
    return {"diffusion": root / "diffusion", "ar": root / "ar"}


@pytest.fixture(scope="module")
def bundles(dirs):
    return {k: llada.load(v, device="cpu") for k, v in dirs.items()}


# A model directory in the public LLaDA layout (unit/checkpoint/, unit/commands/).
@pytest.fixture
def llada_dir(tmp_path) -> tuple[Path, dict]:
    sd = _random_llada_state(LLADA_STYLE_CONFIG)
    return _write_llada_dir(tmp_path / "single", LLADA_STYLE_CONFIG, sd), sd


# A two-couplet poem file for the commands that take one (unit/test_cli.py, integration/test_cli_end_to_end.py).
@pytest.fixture
def poem_file(tmp_path):
    path = tmp_path / "poem_data.json"
    path.write_text(json.dumps([{"first": "the cat sat", "second": "on the mat"}] * 2))
    return path


# Family directories in their public layouts (unit/families/, integration/test_family_surfaces.py).
@pytest.fixture
def dream_dir(tmp_path) -> tuple[Path, dict, dict[str, torch.Tensor], dict[str, int]]:
    """A tiny model directory in Dream's public layout: config.json, 3 safetensors shards with Dream's
    key names and their index, and Dream's tokenizer files."""
    from llada.families.dream import checkpoint_key, config_from_json

    root = tmp_path / "dream"
    ids = _write_dream_tokenizer(root)
    cfg = _tiny_dream_config(ids)
    with torch.device("meta"):
        shape = FAMILIES["dream"].build(config_from_json(cfg))
    state = _random_state(shape, checkpoint_key)
    state["lm_head.weight"][cfg["mask_token_id"]] = 0  # the mask's logit is 0, never the largest (see below)
    (root / "config.json").write_text(json.dumps(cfg))
    keys = sorted(state)
    weight_map = {}
    for i in range(3):
        name = f"model-{i + 1:05d}-of-00003.safetensors"
        save_file({k: state[k] for k in keys[i::3]}, str(root / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys[i::3]})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root, cfg, state, ids


@pytest.fixture(scope="module", params=["llada2", "llada_moe"])
def public_dir(request, tmp_path_factory):
    cfg = TINY_LLADA2 if request.param == "llada2" else TINY_LLADA_MOE
    root, state = _public_dir(tmp_path_factory.mktemp(request.param), cfg)
    return request.param, root, cfg, state


# The invented couplets as a poem data file (unit/evaluation/test_poem.py, integration/test_poem_runs.py).
@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "poems.json"
    path.write_text(json.dumps(COUPLETS, ensure_ascii=False), encoding="utf-8")
    return path


# The served tiny model (integration/test_server*.py, test_chat_page.py, unit/serve/, unit/commands/).
@pytest.fixture(scope="module")
def bundle():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    model = LLaDAModel(preset("debug", **config_ids(tok))).eval()
    with torch.no_grad():  # larger weights than the default init, so that answers depend on the prompt
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.2)
    return SimpleNamespace(model=model, tokenizer=tok)


# Training data and a pretrained tiny model (unit/training/, integration/test_multi_process_training.py).
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    w = World(seed=0, n_people=30, n_stories=60, n_sums=400)
    path.write_text("\n\n".join(w.pretrain_documents()))
    return path


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "chat.jsonl"
    w = World(seed=0, n_people=30, n_stories=10, n_sums=100)
    path.write_text("\n".join(json.dumps(c) for c in w.sft_conversations()))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus) -> Path:
    return Trainer(_cfg(tmp_path_factory.mktemp("pretrained"), corpus, max_steps=2)).fit()


@pytest.fixture
def hub(monkeypatch):
    """A fake HfApi and a stored token (no network)."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(_FakeHfApi, "calls", [])
    monkeypatch.setattr(_FakeHfApi, "refuse", None)
    return _FakeHfApi

"""Each family's directory through the command line, the server, lm-eval and training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch
from support.moe_families import (
    TINY_LLADA2,
    _public_dir,
)

import llada
from llada.sampling import SamplerOptions


def test_dream_through_generate_the_server_and_lm_eval(dream_dir, capsys):
    """`llada generate`, the OpenAI-compatible server and the lm-eval adapter on a Dream directory
    give the library's answer (its preset `dream`: one block, entropy, Dream's schedule)."""
    from fastapi.testclient import TestClient
    from lm_eval.api.instance import Instance

    from llada.cli import main
    from llada.evaluation.harness import LLaDAEvalLM
    from llada.sampling.text import sample_text
    from llada.serve.app import create_app

    root, *_ = dream_dir
    bundle = llada.load(root)
    options = SamplerOptions.from_dict({"preset": "dream", "gen_length": 8, "steps": 8})
    want = sample_text(bundle.model, bundle.tokenizer, "the cat", options)[0].strip()
    assert main(["generate", "the cat", "--model", str(root), "--device", "cpu", "--preset", "dream",
                 "--gen_length", "8", "--steps", "8"]) == 0
    assert capsys.readouterr().out.strip() == want
    with TestClient(create_app(type("Args", (), {"model": bundle.model, "tokenizer": bundle.tokenizer})())) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "the cat"}],
                                                       "preset": "dream", "max_tokens": 8, "steps": 8})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].strip() == want
    lm = LLaDAEvalLM(str(root), device="cpu", preset="dream", steps=8, mc_num=4)
    context = bundle.tokenizer.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=False,
                                                   add_generation_prompt=True)
    answer = lm.generate_until([Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": 8}), 0)])[0]
    assert answer.strip() == want
    (score, _), = lm.loglikelihood([Instance("loglikelihood", {}, ("the cat", " sat on"), 0)])
    assert score < 0


def test_generate_on_the_command_line(public_dir, capsys):
    from llada.cli import main
    from llada.sampling.text import sample_text

    _, root, *_ = public_dir
    bundle = llada.load(root)
    want = sample_text(bundle.model, bundle.tokenizer, "the cat", SamplerOptions.from_dict(
        {"preset": "llada2", "gen_length": 8, "block_length": 4}))[0]
    assert main(["generate", "the cat", "--model", str(root), "--device", "cpu", "--preset", "llada2",
                 "--gen_length", "8", "--block_length", "4"]) == 0
    assert capsys.readouterr().out.strip() == want.strip()


def test_generate_through_the_server_and_lm_eval(public_dir):
    """The OpenAI-compatible server and the lm-eval adapter give the library's answer, and lm-eval's
    loglikelihood scores through the family's network."""
    from fastapi.testclient import TestClient
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM
    from llada.sampling.text import sample_text
    from llada.serve.app import create_app

    _, root, *_ = public_dir
    bundle = llada.load(root)
    want = sample_text(bundle.model, bundle.tokenizer, "the cat", SamplerOptions.from_dict(
        {"preset": "llada2", "gen_length": 8, "block_length": 4}))[0].strip()
    with TestClient(create_app(type("Args", (), {"model": bundle.model, "tokenizer": bundle.tokenizer})())) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "the cat"}],
                                                       "preset": "llada2", "max_tokens": 8, "block_length": 4})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].strip() == want
    lm = LLaDAEvalLM(str(root), device="cpu", preset="llada2", block_length=4, mc_num=4)
    context = bundle.tokenizer.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=False)
    answer = lm.generate_until([Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": 8}), 0)])[0]
    assert answer.strip() == want
    (score, _), = lm.loglikelihood([Instance("loglikelihood", {}, ("the cat", " sat on"), 0)])
    assert math.isfinite(score) and score < 0


def test_training_continues_from_a_family_directory_in_its_layout(public_dir, tmp_path):
    """`llada train --model DIR` on a family's directory: the run's model directory is written in
    that family's public layout (its keys), and loads as that family."""
    from llada.training.config import TrainConfig
    from llada.training.trainer import Trainer

    name, root, cfg, state = public_dir
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(["the cat sat on the mat a dog ran"] * 40))
    run = TrainConfig(model=str(root), data=str(corpus), out_dir=str(tmp_path / "run"), seq_len=16, batch_size=2,
                      max_steps=2, warmup_steps=1, lr=1e-3, eval_every=0, save_every=0, log_every=1,
                      progress=False, tensorboard=False)
    final = Path(Trainer(run).fit())
    from safetensors import safe_open
    keys = set()
    for f in final.glob("model*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            keys |= set(fh.keys())
    assert keys == set(state)
    trained = llada.load(final, tokenizer=False)
    assert trained.config.family == name
    assert json.loads((final / "config.json").read_text())["architectures"] == cfg["architectures"]
    before = llada.load(root, tokenizer=False).model
    ids = torch.tensor([[0, 1, 2, 3, 63, 63]])
    with torch.no_grad():
        assert not torch.equal(trained.model(ids), before(ids))  # it trained


def test_convert_to_bfloat16_and_back_keeps_the_family_layout(public_dir, tmp_path):
    """`llada convert DIR OUT --dtype bfloat16`, then back to float32: the family's keys, its
    config.json, and weights equal to the bfloat16 rounding of the originals."""
    from safetensors import safe_open

    from llada.commands.convert import convert

    name, root, cfg, state = public_dir
    convert(str(root), str(tmp_path / "bf16"), dtype="bfloat16", max_shard_size="20KB")
    convert(str(tmp_path / "bf16"), str(tmp_path / "fp32"), dtype="float32")
    for directory, dtype in ((tmp_path / "bf16", torch.bfloat16), (tmp_path / "fp32", torch.float32)):
        got = {}
        for f in directory.glob("model*.safetensors"):
            with safe_open(str(f), "pt") as fh:
                got.update({k: fh.get_tensor(k) for k in fh.keys()})
        assert sorted(got) == sorted(state)
        assert all(torch.equal(got[k], state[k].to(torch.bfloat16).to(dtype)) for k in state)
        saved = json.loads((directory / "config.json").read_text())
        assert saved["architectures"] == cfg["architectures"] and saved["torch_dtype"] == str(dtype)[6:]
    assert len(list((tmp_path / "bf16").glob("model-*.safetensors"))) > 1  # sharded at 20KB
    assert llada.load(tmp_path / "fp32", tokenizer=False).config.family == name


def test_a_presets_value_is_cleared_with_none_on_the_command_line(public_dir, capsys):
    """`--preset llada2.1 --editing_threshold none` is the llada2 preset (no editing)."""
    from llada.cli import main

    _, root, *_ = public_dir
    common = ["generate", "the cat", "--model", str(root), "--device", "cpu", "--gen_length", "8"]
    assert main([*common, "--preset", "llada2"]) == 0
    want = capsys.readouterr().out
    assert main([*common, "--preset", "llada2.1", "--editing_threshold", "none"]) == 0
    assert capsys.readouterr().out == want
    assert main([*common, "--threshold", "high"]) == 2
    assert "threshold must be float" in capsys.readouterr().err


def test_a_saved_llada2_directory_recommends_block_diffusion(tmp_path):
    """generation_config.json of a saved LLaDA 2.x model holds its authors' decoding (preset llada2),
    which transformers' generate then uses; `llada info` names the family and the experts."""

    root, _ = _public_dir(tmp_path / "d", TINY_LLADA2)
    bundle = llada.load(root)
    llada.save(tmp_path / "saved", bundle.model, bundle.tokenizer)
    options = llada.load(tmp_path / "saved").options
    assert options == SamplerOptions.from_dict({"preset": "llada2"})
    info = subprocess.run([sys.executable, "-m", "llada", "info", str(tmp_path / "saved")], capture_output=True,
                          text=True, check=True).stdout
    assert "family          llada2" in info and "16 experts of 16, 3 per token (sigmoid router)" in info
    assert "active per token" in info

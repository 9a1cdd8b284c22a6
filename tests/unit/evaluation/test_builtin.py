"""`llada eval`: the built-in world tasks, their grid and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import llada
from llada.model import LLaDAModel


# ------------------------------------------------------------------------------------- llada eval
@pytest.fixture(scope="module")
def world_models(tmp_path_factory) -> tuple[Path, Path]:
    """A random diffusion model and a random AR baseline with a BPE tokenizer trained on the world."""
    from llada.config import preset
    from llada.data.world import World
    from llada.tokenizer import config_ids, train_tokenizer

    root = tmp_path_factory.mktemp("world_models")
    tok = train_tokenizer(World(seed=0).pretrain_documents()[:500], vocab_size=400)
    out = []
    for name, causal in (("dm", False), ("ar", True)):
        torch.manual_seed(0)
        model = LLaDAModel(preset("debug", causal=causal, **config_ids(tok)))
        llada.save(root / name, model, tok)
        out.append(root / name)
    return out[0], out[1]


def test_llada_eval_grid_with_baseline_writes_a_report(world_models, tmp_path):
    from llada.commands.evaluate import evaluate

    dm, ar = world_models
    out = evaluate(str(dm), baseline=str(ar), tasks="fact_reverse,infill", steps="4,8", gen_length=8,
                   block_length="4,8", remasking="low_confidence,random", limit=3, mc_num=2, likelihood_docs=3,
                   out_dir=str(tmp_path / "eval"))
    data = json.loads((out / "results.json").read_text())
    settings = 2 * 2 * 2  # steps x block_length x remasking
    assert len(data["tasks"]) == 2 * settings + 2  # + the AR baseline once per task
    assert {r["kind"] for r in data["tasks"]} == {"diffusion", "autoregressive"}
    for r in data["tasks"]:
        assert r["n"] == 3 and 0 <= r["generation_accuracy"] <= 1
        if r["task"] == "infill":  # the name is blanked in every sentence: generation only
            assert r["choice_accuracy"] is None
        else:
            assert 0 <= r["choice_accuracy"] <= 1
    assert data["likelihood"]["autoregressive"]["exact"] and not data["likelihood"]["diffusion"]["exact"]
    report = (out / "report.md").read_text()
    assert "| autoregressive |" in report and "steps=8 block=4 random" in report
    assert (out / "report.png").stat().st_size > 1000


@pytest.mark.parametrize("kwargs,match", [
    (dict(tasks="fact_sideways"), "unknown task"),
    (dict(remasking="loudest"), "remasking"),
    (dict(steps="3", gen_length=8, block_length="4"), "multiple of the number of blocks"),
    (dict(steps="4,x"), "integers"),
])
def test_llada_eval_bad_input(world_models, kwargs, match):
    from llada.commands.evaluate import evaluate
    from llada.errors import UserError

    with pytest.raises(UserError, match=match):
        evaluate(str(world_models[0]), **kwargs)


def test_llada_eval_refuses_a_diffusion_baseline(world_models, tmp_path):
    from llada.commands.evaluate import evaluate
    from llada.errors import UserError

    with pytest.raises(UserError, match="--baseline must be an autoregressive model"):
        evaluate(str(world_models[0]), baseline=str(world_models[0]), tasks="arithmetic", limit=1, mc_num=1,
                 likelihood_docs=0, out_dir=str(tmp_path))


def test_llada_eval_command_line(world_models, tmp_path, capsys):
    from llada.cli import main

    dm, ar = world_models
    code = main(["eval", "--model", str(dm), "--baseline", str(ar), "--tasks", "arithmetic", "--limit", "2",
                 "--steps", "4", "--gen_length", "4", "--block_length", "4", "--mc_num", "1",
                 "--likelihood_docs", "0", "--out_dir", str(tmp_path)])
    assert code == 0 and (tmp_path / "report.md").exists()
    assert "autoregressive" in capsys.readouterr().out
    assert main(["eval", "--model", str(dm), "--tasks", "nope"]) == 2


def test_infill_rows_blank_every_mention_of_the_name(word_tokenizer):
    from llada.evaluation.builtin import _infill_row

    tok = word_tokenizer
    item = {"segments": ["the ", " sat on a mat the ", " ran"], "answer": "dog cat"}
    ids, start, n = _infill_row(tok, item, mask_id=63)
    words = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    expected = [tok.bos_token_id, *words("the"), 63, 63, *words("sat on a mat the"), 63, 63, *words("ran")]
    assert ids == expected
    assert (start, n) == (2, 2)  # the first blank: after BOS and "the", two tokens long


def test_builtin_evaluation_renders_within_the_template_budget(word_tokenizer):
    from llada.errors import CheckpointError
    from llada.evaluation.builtin import _chat_prompt
    from llada.tokenizer import CHAT_TEMPLATE

    word_tokenizer.chat_template = "{{ ' ' * 1500000 }}" + CHAT_TEMPLATE
    with pytest.raises(CheckpointError, match="the chat template builds a value of about 1,500,000 characters"):
        _chat_prompt(word_tokenizer, "who sat on the mat")

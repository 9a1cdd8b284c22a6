"""`llada reproduce conversion` at the test size: the four models trained once (the converted one
block diffusion from the converted AR model, sampling block-causally), scored on the same held-out
problems, reused by a second run; and the claim's AR bits per answer token against a slow loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

import llada
from llada.commands.reproduce import reproduce
from llada.data.sft import render_all
from llada.recipe import RECIPES
from llada.tasks import parse_source

RECIPE = RECIPES["test"].conversion
NAMES = ("ar-source", "converted", "diffusion", "ar")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    [out] = reproduce("conversion", out_dir=str(root), size="test", progress=False)
    return root, out


def _models(root):
    task = root / "models" / f"test-seed0-{RECIPE.task.task}"
    # the recipe's reasoning task is this very TaskRecipe: the models from scratch are remasking's task models
    assert RECIPES["test"].task == RECIPE.task
    return {"ar-source": task / "conversion" / "ar-source" / "model", "converted": task / "conversion" / "converted" /
            "model", "diffusion": task / "diffusion" / "model", "ar": task / "ar" / "model"}


def _training_config(model):
    return json.loads((model / "training_config.json").read_text())


def test_the_claim_runs_end_to_end_and_is_not_measured_at_the_test_size(run, monkeypatch):
    import llada.conversion
    import llada.training.trainer

    root, out = run
    report = (out / "report.md").read_text()
    res = json.loads((out / "results.json").read_text())
    assert report.startswith("# `llada reproduce conversion`") and "**Result: not measured at this size.**" in report
    assert res["held"] is None and res["status"] == "not measured at this size"
    assert (out / "conversion.png").stat().st_size > 1000
    for name in NAMES:
        assert res["results"][name]["accuracy"]["n"] == RECIPE.task.eval_items
        assert res["results"][name]["bits_per_answer_token"] > 0
        assert res["results"][name]["training_seconds"] > 0  # recorded beside each model when it was trained
    for other in ("diffusion", "ar"):
        accs = [res["results"][n]["accuracy"]["value"] for n in ("converted", other)]
        assert res["results"][f"converted-{other}"]["difference"] == pytest.approx(accs[0] - accs[1])
    held_out = parse_source(RECIPE.task.source)[0].items("test", RECIPE.task.eval_items, 0)
    assert f"AR → block diffusion: {held_out[0].prompt} →" in report
    monkeypatch.setattr(llada.training.trainer, "run", lambda cfg: pytest.fail("retrained a finished model"))
    monkeypatch.setattr(llada.conversion, "convert", lambda *a, **k: pytest.fail("converted again"))
    reproduce("conversion", out_dir=str(root), size="test", progress=False)


def test_the_converted_model_is_block_diffusion_from_the_converted_ar_model(run):
    root, _ = run
    models = _models(root)
    configs = {name: _training_config(path) for name, path in models.items()}
    source = models["converted"].parent.parent / "converted-source"
    converted = configs["converted"]
    assert converted["objective"] == "block_diffusion" and converted["block_size"] == RECIPE.block_size
    assert converted["model"] == str(source) and converted["max_steps"] == RECIPE.task.steps - RECIPE.ar_steps
    assert configs["ar-source"]["objective"] == "ar" and configs["ar-source"]["max_steps"] == RECIPE.ar_steps
    start = llada.load(source)
    assert start.model.config.shifted_prediction and not start.model.config.causal
    # the same task, batch, lr, warm-up and seq_len in every run; only the loss, the start and the steps differ
    for name in ("ar-source", "diffusion", "ar"):
        differing = {k for k in converted if converted[k] != configs[name][k]}
        assert differing <= {"model", "objective", "block_size", "out_dir", "max_steps"}
    assert configs["diffusion"]["max_steps"] == configs["ar"]["max_steps"] == RECIPE.task.steps
    bundle = llada.load(models["converted"])
    assert bundle.options.block_causal and bundle.options.block_length == RECIPE.block_size
    assert bundle.model.config.shifted_prediction


@torch.no_grad()
def test_the_ar_bits_per_answer_token_equal_a_slow_loop_over_each_answer_token(run):
    root, out = run
    bundle = llada.load(_models(root)["ar"])
    task = parse_source(RECIPE.task.source)[0]
    items = task.items("test", RECIPE.task.eval_items, 0)
    rows = render_all(bundle.tokenizer, [task.conversation(it) for it in items], max_tokens=RECIPE.task.seq_len)
    nats, tokens = 0.0, 0
    for row in rows:  # each answer token from the prefix before it alone, one at a time
        for i, learned in enumerate(row["response_mask"]):
            if learned:
                logits = bundle.model(torch.tensor([row["input_ids"][:i]]))[0, -1].double()
                nats -= float(logits.log_softmax(-1)[row["input_ids"][i]])
                tokens += 1
    res = json.loads((out / "results.json").read_text())["results"]["ar"]
    assert res["answer_tokens"] == tokens
    assert res["bits_per_answer_token"] == pytest.approx(nats / tokens / math.log(2), rel=1e-5)

"""`llada reproduce remasking` at the test size: the task model trained once, apart from the world's
models, reused by a second run, and every figure of the report measured on the recipe's items."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llada.commands.reproduce import reproduce
from llada.recipe import RECIPES
from llada.reproduce.remasking import STRATEGIES


def test_reproduce_remasking_trains_the_task_model_once_and_measures_every_strategy(tmp_path, monkeypatch):
    import llada.training.trainer

    [out] = reproduce("remasking", out_dir=str(tmp_path), size="test", progress=False)
    task = RECIPES["test"].task
    assert task is not None
    res = json.loads((out / "results.json").read_text())
    assert res["recipe"]["task"] == dataclasses.asdict(task)
    for strategy in STRATEGIES:
        for steps in (1, 2, 4):  # the 2-digit sums' gen_length 4 (3 digits and the stop), half, one
            assert res["results"][f"{strategy}/{steps}"]["n"] == task.eval_items
    assert set(res["results"]["low_confidence-random"]) == {"1", "2", "4"}
    assert res["results"]["control_steps_1_identical"] is True  # one step: no order, the same answers
    order = res["results"]["order"]["low_confidence/3"]
    assert len(order["mean_step"]) == 4 and sum(order["mean_step"]) > 0
    report = (out / "report.md").read_text()
    assert "**The order of unmasking**" in report and f"llada sft --data {task.source}" in report
    # the task model lives beside the world's models, which this claim does not train
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["test-seed0-addition"]
    assert (models / "test-seed0-addition" / "diffusion" / "model" / "model.safetensors").is_file()
    monkeypatch.setattr(llada.training.trainer, "run", lambda cfg: pytest.fail("retrained a finished task model"))
    reproduce("remasking", out_dir=str(tmp_path), size="test", progress=False)

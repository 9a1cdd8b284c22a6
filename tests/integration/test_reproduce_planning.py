"""`llada reproduce planning` at the test size: per planning task, a diffusion model and an AR model
trained once on the same budget (their training configs differ only in the objective), both scored
on the same held-out problems, and reused by a second run."""

from __future__ import annotations

import json

import pytest

from llada.commands.reproduce import reproduce
from llada.recipe import RECIPES
from llada.tasks import parse_source


def test_reproduce_planning_trains_each_pair_on_one_budget_and_scores_the_same_problems(tmp_path, monkeypatch):
    import llada.training.trainer

    [out] = reproduce("planning", out_dir=str(tmp_path), size="test", progress=False)
    recipe = RECIPES["test"]
    res = json.loads((out / "results.json").read_text())
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == [f"test-seed0-{t.task}" for t in sorted(
        recipe.planning, key=lambda t: t.task)]
    for task in recipe.planning:
        configs = {}
        for objective in ("diffusion", "ar"):
            assert res["results"][f"{task.task}/{objective}"]["accuracy"]["n"] == task.eval_items
            model = models / f"test-seed0-{task.task}" / objective / "model"
            configs[objective] = json.loads((model / "training_config.json").read_text())
        assert configs["diffusion"]["data"] == task.source and configs["diffusion"]["objective"] == "diffusion"
        assert configs["ar"]["objective"] == "ar"
        differing = {k for k in configs["diffusion"] if configs["diffusion"][k] != configs["ar"][k]}
        assert differing == {"objective", "out_dir"}
        # the difference is the two accuracies' difference, on the same problems
        diff = res["results"][f"{task.task}/diffusion-ar"]
        accs = [res["results"][f"{task.task}/{o}"]["accuracy"]["value"] for o in ("diffusion", "ar")]
        assert diff["difference"] == pytest.approx(accs[0] - accs[1])
        held_out = parse_source(task.source)[0].items("test", task.eval_items, 0)
        report = (out / "report.md").read_text()
        assert f"{task.task}, diffusion: {held_out[0].prompt} →" in report
    monkeypatch.setattr(llada.training.trainer, "run", lambda cfg: pytest.fail("retrained a finished task model"))
    reproduce("planning", out_dir=str(tmp_path), size="test", progress=False)

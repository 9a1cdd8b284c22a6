"""The conversion claim's verdict rule on made-up per-problem outcomes, the per-token ratio and its
standard error, the recipe's checks, and which of its models are shared with other claims
(tests/integration/test_reproduce_conversion.py runs the claim end to end)."""

from __future__ import annotations

import math

import pytest

from llada.recipe import RECIPES, ConversionRecipe, TaskRecipe
from llada.reproduce.conversion import ORDER, Measured, judge, per_token
from llada.reproduce.models import Models
from llada.stats import Accuracy
from llada.tasks.scoring import TaskScores

RECIPE = ConversionRecipe(TaskRecipe(steps=20), ar_steps=10, block_size=8)


def _scores(hits: list[bool]) -> TaskScores:
    return TaskScores("addition", Accuracy.of(hits), Accuracy.of(hits), [],
                      [{"prompt": "1+1=", "answer": "2", "response": "2" if h else "3", "reward": float(h)} for h in hits])


def _measured(converted: list[bool], diffusion: list[bool]) -> Measured:
    m = Measured(RECIPE, [], gen=4)
    for name in ORDER:
        m.scores[name] = _scores({"converted": converted, "diffusion": diffusion}.get(name, converted))
        m.nats[name], m.tokens[name], m.seconds[name] = [1.0] * len(converted), [3] * len(converted), None
    return m


@pytest.mark.parametrize(("converted", "diffusion", "held", "words"), [
    ([True] * 18 + [False] * 2, [True] * 4 + [False] * 16, True, "converted model beats"),  # +0.70, SE ~0.10
    ([True] * 11 + [False] * 9, [True] * 10 + [False] * 10, False, "does not beat (within two SE)"),  # +0.05
    ([False] * 20, [True] * 20, False, "loses to"),
])
def test_the_claim_holds_only_when_conversion_leads_scratch_diffusion_by_two_paired_se(converted, diffusion, held,
                                                                                       words):
    report = judge(_measured(converted, diffusion))
    assert report.held is held and words in report.verdict
    d = report.results["converted-diffusion"]
    assert d["difference"] == pytest.approx(sum(converted) / 20 - sum(diffusion) / 20)
    assert report.results["converted-ar"]["difference"] == 0.0  # reported, never judged


def test_per_token_is_the_ratio_of_sums_with_the_ratio_estimators_standard_error():
    totals, counts = [3.0, 5.0, 4.0], [2, 3, 3]
    r, se = per_token(totals, counts)
    assert r == pytest.approx(12 / 8)
    residuals = [x - r * c for x, c in zip(totals, counts, strict=True)]
    assert se == pytest.approx(math.sqrt(sum(e * e for e in residuals) / 2 / 3) / (8 / 3))
    with pytest.raises(ValueError):
        per_token([], [])


@pytest.mark.parametrize(("changes", "words"), [
    ({"ar_steps": 0}, "ar_steps must be in 1..19"),
    ({"ar_steps": 20}, "ar_steps must be in 1..19"),
    ({"block_size": 7}, "block_size must divide the task's seq_len 64"),
    ({"task": TaskRecipe(steps=20, stage="pretrain")}, "stage must be sft"),
])
def test_a_conversion_recipe_refuses_budgets_and_blocks_that_cannot_work(changes, words):
    with pytest.raises(ValueError, match=words):
        ConversionRecipe(**{"task": RECIPE.task, "ar_steps": 10, "block_size": 8, **changes})


def test_the_models_from_scratch_are_shared_unless_another_claim_trains_that_task_with_another_budget(tmp_path):
    for size, diffusion_shared in (("test", True), ("reproduce", False)):
        recipe = RECIPES[size]
        models = Models(tmp_path, recipe, 0, "cpu")
        task = recipe.conversion.task
        # remasking trains the addition diffusion model: at the default size for 4,000 steps, not 2,000
        assert models._shareable("diffusion", task) is diffusion_shared
        assert models._shareable("ar", task)  # no other claim trains an AR model on addition
    assert RECIPES["large"].conversion.task == RECIPES["large"].task

"""The planning claim's verdict rule and paired differences on made-up per-problem outcomes
(tests/integration/test_reproduce_planning.py runs the claim end to end)."""

from __future__ import annotations

import math

import pytest

from llada.recipe import TaskRecipe
from llada.reproduce.planning import Measured, differences, verdict_of
from llada.stats import Accuracy
from llada.tasks.scoring import TaskScores


def _scores(rewards: list[float]) -> TaskScores:
    hits = [r == 1.0 for r in rewards]
    return TaskScores("t", Accuracy.of(hits), Accuracy.of(hits), [], [{"reward": r} for r in rewards])


def test_differences_are_paired_over_the_same_problems():
    m = Measured([TaskRecipe(task="sudoku")])
    # diffusion solves problems 0-2, AR problems 2-3: per-problem differences 1, 1, 0, -1
    m.scores["sudoku", "diffusion"] = _scores([1.0, 1.0, 1.0, 0.0])
    m.scores["sudoku", "ar"] = _scores([0.0, 0.0, 1.0, 1.0])
    d, se = differences(m)["sudoku"]
    mean = 0.25
    sd = math.sqrt(sum((x - mean) ** 2 for x in (1, 1, 0, -1)) / 3)
    assert d == pytest.approx(mean) and se == pytest.approx(sd / 2)


@pytest.mark.parametrize(("diffs", "held"), [
    ({"sudoku": (0.30, 0.05), "countdown": (0.20, 0.04)}, True),
    ({"sudoku": (0.30, 0.05), "countdown": (0.05, 0.04)}, False),  # one task within two SE
    ({"sudoku": (-0.30, 0.05)}, False),  # AR ahead
    ({}, False),  # no task: nothing shown
])
def test_the_claim_holds_only_when_diffusion_leads_by_two_se_on_every_task(diffs, held):
    assert verdict_of(diffs) is held

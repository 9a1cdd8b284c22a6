"""The semi-ar claim's pieces on made-up outcomes: its sampler settings, the canvas, "cut short",
and the verdict rule (tests/integration/test_reproduce_runs.py runs the claim end to end)."""

from __future__ import annotations

import pytest

from llada.errors import UserError
from llada.recipe import TaskRecipe
from llada.reproduce.models import semi_ar_recipes
from llada.reproduce.semi_ar import Measured, canvas_length, judged, settings


def test_settings_are_one_block_two_block_sizes_and_the_two_eos_rules():
    assert settings(32) == {
        "one block": {"block_length": 32},
        "blocks of 16": {"block_length": 16},
        "blocks of 8": {"block_length": 8},
        "one block, confidence_eos_eot_inf": {"block_length": 32, "confidence_eos_eot_inf": True},
        "one block, logits_eos_inf": {"block_length": 32, "logits_eos_inf": True},
    }
    assert "blocks of 2" not in settings(8)  # blocks of at least 4 tokens


def test_the_canvas_is_the_answer_region_of_the_training_rows():
    recipe = TaskRecipe(task="sudoku", seq_len=64)
    assert canvas_length(recipe, 25) == 32  # 39 tokens after a 25-token prompt, down to a multiple of 8
    assert canvas_length(recipe, 60) == 8  # never less than 8


def test_the_two_models_differ_only_in_padding():
    pair = semi_ar_recipes(TaskRecipe(task="sudoku", steps=123))
    assert pair["eos-padded"].padding == "max_length" and pair["one-eos"].padding == "longest"
    assert pair["eos-padded"].steps == pair["one-eos"].steps == 123
    with pytest.raises(UserError, match="no semi-ar task"):
        semi_ar_recipes(None)


def _measured(one_block: list[bool], blocks_16: list[bool], blocks_8: list[bool]) -> Measured:
    m = Measured(TaskRecipe(task="sudoku"), 32, [4] * len(one_block))
    for label, hits in (("one block", one_block), ("blocks of 16", blocks_16), ("blocks of 8", blocks_8)):
        m.hits["eos-padded", label] = hits
        m.lengths["eos-padded", label] = [4 if h else 2 for h in hits]
    return m


def test_cut_short_is_an_answer_shorter_than_the_reference():
    m = _measured([True, False, True, False], [True] * 4, [True] * 4)
    assert m.cut_short("eos-padded", "one block") == [False, True, False, True]


def test_the_claim_holds_when_the_better_block_setting_leads_one_block_by_two_paired_se():
    n = 40
    one = [i < 10 for i in range(n)]  # 10/40
    held, best, (d, se) = judged(_measured(one, [i < 12 for i in range(n)], [i < 30 for i in range(n)]))
    assert best == "blocks of 8" and d == pytest.approx(0.5) and held  # 20 more of 40, none fewer: se 0.08
    held, best, (d, _) = judged(_measured(one, [i < 12 for i in range(n)], [i < 11 for i in range(n)]))
    assert best == "blocks of 16" and d == pytest.approx(0.05) and not held

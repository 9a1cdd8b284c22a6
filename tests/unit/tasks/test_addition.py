"""The addition task against Python's own int arithmetic; its split, scores and data forms."""

from __future__ import annotations

import pytest

from llada.errors import UserError
from llada.tasks import TaskItem, get_task
from llada.tasks.addition import Addition, AdditionConfig


@pytest.mark.parametrize("lo,hi", [(1, 2), (3, 4), (20, 20)])
def test_sums_are_right_and_within_the_digit_range(lo, hi):
    task = get_task("addition", min_digits=lo, max_digits=hi)
    for split in ("train", "test"):
        for item in task.items(split, 60, seed=3):
            a, b = item.problem["a"], item.problem["b"]
            assert item.prompt == f"{a}+{b}=" and item.answer == str(a + b)  # Python ints: exact at any size
            for x in (a, b):
                assert (lo == 1 and x == 0) or lo <= len(str(x)) <= hi
            assert task.reward(item, item.answer) == 1.0


def test_default_is_every_two_digit_pair_most_significant_digit_first():
    task = Addition()
    assert task.config.operand_range == (0, 99)
    items = task.items("train", 2000, seed=0)
    assert max(max(it.problem["a"], it.problem["b"]) for it in items) == 99
    assert any(len(it.answer) == 3 and it.answer[0] == "1" for it in items)  # the carry digit comes first


def test_splits_are_disjoint_deterministic_and_prefix_stable():
    task = Addition()
    train, test = task.items("train", 3000, seed=0), task.items("test", 300, seed=0)
    # the canonical problem is the unordered pair: a+b and b+a never fall in different splits
    pairs = {frozenset((it.problem["a"], it.problem["b"])) for it in train}
    assert not pairs & {frozenset((it.problem["a"], it.problem["b"])) for it in test}
    assert task.items("test", 300, seed=0) == test
    assert task.items("test", 100, seed=0) == test[:100]
    assert task.items("test", 100, seed=1) != test[:100]
    assert len({it.prompt for it in train}) == len(train)
    # membership does not depend on what else was drawn: another seed, the same rule
    assert all(task.split_of(it) == "test" for it in task.items("test", 200, seed=7))


def test_the_whole_range_has_the_held_out_share():
    task = Addition()
    split = [task.split_of_key(f"{a}+{b}") for a in range(100) for b in range(a, 100)]
    assert 0.07 < split.count("test") / len(split) < 0.13  # test_fraction 0.1 of 5,050 pairs
    smaller = get_task("addition", test_fraction=0.05)
    assert all(  # a smaller fraction holds out a subset
        task.split_of_key(f"{a}+{b}") == "test"
        for a in range(100) for b in range(a, 100) if smaller.split_of_key(f"{a}+{b}") == "test")


@pytest.mark.parametrize("response,reward", [
    ("82", 1.0), (" 82\n", 1.0),
    ("83", 0.0), ("082", 0.0), ("8 2", 0.0), ("", 0.0), ("82.0", 0.0), ("-82", 0.0),
    ("9" * 100_000, 0.0), ("__import__('os')", 0.0), ("1/0", 0.0), ("(" * 10_000 + "82" + ")" * 10_000, 0.0),
])
def test_reward(response, reward):
    item = TaskItem("37+45=", "82", {"a": 37, "b": 45})
    assert Addition().reward(item, response) == reward


def test_non_text_responses_score_zero():
    task = Addition()
    item = task.items("train", 1)[0]
    for response in (None, 82, b"82"):
        assert task.reward(item, response) == 0.0
        assert task.position_scores(item, response) == [False] * len(item.answer)


def test_exact_and_position_scores():
    task = Addition()
    item = TaskItem("57+45=", "102", {"a": 57, "b": 45})
    assert task.position_scores(item, "102") == [True, True, True]
    assert task.position_scores(item, "112") == [True, False, True]
    assert task.position_scores(item, "10") == [True, True, False]  # too short: wrong where it lacks
    assert task.position_scores(item, "1020") == [True, True, True]
    assert task.exact(item, " 102 ") and not task.exact(item, "1020")


def test_sft_and_pretraining_forms():
    task = Addition()
    item = TaskItem("37+45=", "82", {"a": 37, "b": 45})
    assert task.conversation(item) == [{"role": "user", "content": "37+45="},
                                       {"role": "assistant", "content": "82"}]
    assert task.text(item) == "37+45=82"


@pytest.mark.parametrize("sizes,message", [
    ({"max_digits": 0}, "addition needs 1 <= min_digits <= max_digits <= 100, got min_digits=1, max_digits=0"),
    ({"min_digits": 3, "max_digits": 2}, "min_digits=3, max_digits=2"),
    ({"max_digits": 2.5}, "max_digits must be an integer, got 2.5"),
    ({"max_digits": True}, "max_digits must be an integer, got True"),
    ({"test_fraction": 1}, r"test_fraction must be a number in \(0, 1\), got 1"),
    ({"digits": 2}, "addition has no size digits; its sizes are: test_fraction, min_digits, max_digits"),
])
def test_bad_sizes_are_one_line_user_errors(sizes, message):
    with pytest.raises(UserError, match=message) as e:
        get_task("addition", **sizes)
    assert "\n" not in str(e.value)


def test_asking_for_more_problems_than_a_split_holds_says_so():
    task = Addition(AdditionConfig(max_digits=1))  # 55 unordered pairs: about 5 held out
    with pytest.raises(UserError, match=r"addition: only \d+ distinct test problems found at these sizes"):
        task.items("test", 50)
    with pytest.raises(UserError, match="split must be one of train, test, got 'validation'"):
        task.items("validation", 1)
    with pytest.raises(UserError, match="n must be an integer >= 0, got -1"):
        task.items("train", -1)

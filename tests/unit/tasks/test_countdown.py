"""The countdown task against a brute force over every way of combining the numbers pairwise."""

from __future__ import annotations

import pytest

from llada.errors import UserError
from llada.tasks import TaskItem, get_task
from llada.tasks.countdown import reachable, reachable_any


def combine(a: int, b: int) -> list[int]:
    """a op b for the four operators, where every result stays a whole number >= 0."""
    out = [a + b, a * b]
    if a >= b:
        out.append(a - b)
    if b and a % b == 0:
        out.append(a // b)
    return out


def brute(numbers: list[int], use_all: bool = True) -> set[int]:
    """Values reachable by repeatedly replacing two of the numbers with one result (the game as
    played by hand); with use_all=False every value seen on the way counts too."""
    seen: set[int] = set()
    ends: set[int] = set()

    def go(state: tuple[int, ...]) -> None:
        seen.update(state)
        if len(state) == 1:
            ends.add(state[0])
            return
        for i in range(len(state)):
            for j in range(len(state)):
                if i != j:
                    rest = tuple(x for k, x in enumerate(state) if k not in (i, j))
                    for v in combine(state[i], state[j]):
                        go(tuple(sorted(rest + (v,))))

    go(tuple(sorted(numbers)))
    return ends if use_all else seen


@pytest.mark.parametrize("numbers", [[3, 5, 7], [2, 2, 9], [1, 20, 13, 4], [6, 6, 6, 6], [17, 3]])
def test_reachable_values_are_the_brute_force_ones(numbers):
    assert set(reachable(tuple(numbers))) == brute(numbers)
    assert set(reachable_any(tuple(numbers))) == brute(numbers, use_all=False)


@pytest.mark.parametrize("sizes", [{}, {"numbers": 4}, {"numbers": 4, "use_all": False}, {"numbers": 2}])
def test_targets_are_reachable_and_the_reference_reaches_them(sizes):
    task = get_task("countdown", **sizes)
    cfg = task.config
    for split in ("train", "test"):
        for item in task.items(split, 25, seed=4):
            nums, target = item.problem["numbers"], item.problem["target"]
            assert len(nums) == cfg.numbers and all(1 <= x <= cfg.max_number for x in nums)
            assert 1 <= target <= cfg.max_target and target in brute(nums, cfg.use_all)
            assert item.prompt == f"{','.join(map(str, nums))}->{target}="
            assert task.reward(item, item.answer) == 1.0, item


def test_splits_are_disjoint_and_deterministic():
    task = get_task("countdown")
    train, test = task.items("train", 400, seed=0), task.items("test", 50, seed=0)
    assert not {task.key(it) for it in train} & {task.key(it) for it in test}
    assert task.items("test", 50, seed=0) == test and task.items("test", 10, seed=0) == test[:10]


ITEM = TaskItem("3,5,7->26=", "3*7+5", {"numbers": [3, 5, 7], "target": 26, "use_all": True})


@pytest.mark.parametrize("response", ["3*7+5", "5+3*7", "7*3+5", "(3*7)+5", "5+(7*3)", " 3 * 7 + 5 ",
                                      "3*7+5=26", "(((3*7)))+5", "(" * 40 + "3*7+5" + ")" * 40])
def test_every_correct_expression_is_accepted(response):
    assert get_task("countdown").reward(ITEM, response) == 1.0


@pytest.mark.parametrize("response", [
    "3*7+5=27", "3*7-5", "3*7", "3*7+5+5", "3*7+5*1", "26", "3*7+05",  # wrong value, reuse, unused, other numbers
    "-3*7+5+42", "3*7+5.0", "3**7", "3^7+5", "3*7+5;0", "7*3+5==26", "x*7+5", "abs(3)*7+5",
    "__import__('os').system('true')", "", "   ", "=26", "3*7+5=", "()",
    "9" * 100_000, "9" * 4400 + "*3", "(" * 10_000 + "3*7+5" + ")" * 10_000, "(" * 99 + ")" * 99,
])
def test_wrong_malformed_and_hostile_answers_score_zero(response):
    assert get_task("countdown").reward(ITEM, response) == 0.0


@pytest.mark.parametrize("numbers,target,response", [
    ([3, 3, 5], 5, "5/(3-3)"),  # division by zero
    ([2, 7, 9], 4, "2-7+9"),  # (2-7) goes below zero on the way
    ([3, 2, 4], 6, "3/2*4"),  # 3/2 is not whole
])
def test_steps_the_rules_forbid_score_zero_where_a_legal_order_scores_one(numbers, target, response):
    item = TaskItem("", "", {"numbers": numbers, "target": target, "use_all": True})
    task = get_task("countdown")
    assert task.reward(item, response) == 0.0
    legal = {"5/(3-3)": None, "2-7+9": "2+9-7", "3/2*4": "3*4/2"}[response]
    if legal is not None:
        assert task.reward(item, legal) == 1.0


def test_use_all_false_accepts_a_subset_but_never_a_reuse():
    item = TaskItem("3,5,7->21=", "3*7", {"numbers": [3, 5, 7], "target": 21, "use_all": False})
    task = get_task("countdown", use_all=False)
    assert task.reward(item, "3*7") == 1.0
    assert task.reward(item, "7+7+7") == 0.0
    assert task.reward(TaskItem("", "", {**item.problem, "use_all": True}), "3*7") == 0.0  # 5 unused


@pytest.mark.parametrize("sizes,message", [
    ({"numbers": 5}, "countdown numbers must be 2, 3 or 4, got 5"),
    ({"max_number": 0}, "max_number must be in 1..1000, got 0"),
    ({"use_all": "yes"}, "use_all must be true or false, got 'yes'"),
    ({"target": 3}, "countdown has no size target"),
])
def test_bad_sizes_are_one_line_user_errors(sizes, message):
    with pytest.raises(UserError, match=message):
        get_task("countdown", **sizes)

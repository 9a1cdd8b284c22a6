"""The sudoku task against an independent brute-force solver: valid solutions, exactly one each."""

from __future__ import annotations

import random

import pytest

from llada.errors import UserError
from llada.tasks import TaskItem, get_task
from llada.tasks.sudoku import count_solutions


def box_side(size: int) -> int:
    return 2 if size == 4 else 3


def fits(grid: list[int], size: int, i: int, d: int) -> bool:
    """Whether digit d may go in cell i: the plain rule, read off the grid cell by cell."""
    r, c, k = i // size, i % size, box_side(size)
    for j in range(size):
        if grid[r * size + j] == d or grid[j * size + c] == d:
            return False
    br, bc = r // k * k, c // k * k
    return all(grid[(br + a) * size + bc + b] != d for a in range(k) for b in range(k))


def brute_count(grid: list[int], size: int, limit: int) -> int:
    """Completions of the first blank onward, in cell order, stopping at `limit`."""
    if 0 not in grid:
        return 1
    i = grid.index(0)
    found = 0
    for d in range(1, size + 1):
        if fits(grid, size, i, d):
            grid[i] = d
            found += brute_count(grid, size, limit - found)
            grid[i] = 0
            if found >= limit:
                break
    return found


def is_valid_grid(text: str, size: int) -> bool:
    g = [int(ch) for ch in text]
    k = box_side(size)
    groups = ([g[r * size:(r + 1) * size] for r in range(size)] + [g[c::size] for c in range(size)]
              + [[g[(br + a) * size + bc + b] for a in range(k) for b in range(k)]
                 for br in range(0, size, k) for bc in range(0, size, k)])
    return all(sorted(x) == list(range(1, size + 1)) for x in groups)


@pytest.mark.parametrize("sizes,n", [({}, 40), ({"min_blanks": 12, "max_blanks": 12}, 10),
                                     ({"size": 9}, 3)])
def test_puzzles_have_one_valid_solution_within_the_blank_range(sizes, n):
    task = get_task("sudoku", **sizes)
    cfg = task.config
    for split in ("train", "test"):
        for item in task.items(split, n, seed=1):
            size, puzzle = cfg.size, item.problem["puzzle"]
            assert item.prompt == puzzle + "=" and len(puzzle) == len(item.answer) == size * size
            assert is_valid_grid(item.answer, size)
            assert all(p in ("0", a) for p, a in zip(puzzle, item.answer, strict=True))  # the givens are kept
            assert cfg.min_blanks <= puzzle.count("0") <= cfg.max_blanks
            assert brute_count([int(ch) for ch in puzzle], size, 2) == 1  # unique, by the independent solver
            assert task.reward(item, item.answer) == 1.0


def test_defaults():
    assert (get_task("sudoku").config.min_blanks, get_task("sudoku").config.max_blanks) == (8, 10)
    nine = get_task("sudoku", size=9).config
    assert (nine.min_blanks, nine.max_blanks) == (40, 50)


def test_the_counter_agrees_with_brute_force_on_grids_with_many_solutions():
    rng = random.Random(0)
    task = get_task("sudoku")
    for item in task.items("train", 30, seed=2):
        grid = [int(ch) for ch in item.answer]
        for i in rng.sample(range(16), rng.randint(8, 16)):
            grid[i] = 0
        for limit in (1, 2, 5, 1000):
            assert count_solutions(grid, 4, limit) == brute_count(list(grid), 4, limit)
    assert count_solutions([0] * 16, 4, 1000) == 288  # every 4x4 grid
    assert count_solutions([1, 1] + [0] * 14, 4) == 0  # a clash among the givens


def test_splits_hold_out_whole_solution_grids_and_are_deterministic():
    task = get_task("sudoku")
    train, test = task.items("train", 300, seed=0), task.items("test", 60, seed=0)
    assert not {it.answer for it in train} & {it.answer for it in test}
    assert task.items("test", 60, seed=0) == test and task.items("test", 20, seed=0) == test[:20]
    nine = get_task("sudoku", size=9)
    assert nine.items("test", 2, seed=5) == nine.items("test", 2, seed=5)


def _open_item(size: int = 4) -> TaskItem:
    """A puzzle with two givens and many solutions: the verifier must read rules, not strings."""
    return TaskItem("1000000000000001=", "1234341221434321", {"size": size, "puzzle": "1000000000000001"})


@pytest.mark.parametrize("response", [
    "1234341221434321", "1243341221344321", "1432231441233241",  # three different valid completions
    "1234 3412 2143 4321", "1234\n3412\n2143\n4321\n",  # separators between rows are ignored
])
def test_any_valid_completion_of_the_givens_is_accepted(response):
    cells = "".join(response.split())
    assert is_valid_grid(cells, 4) and cells[0] == cells[-1] == "1"  # the test's own check of the grid
    assert get_task("sudoku").reward(_open_item(), response) == 1.0


@pytest.mark.parametrize("response", [
    "2134341221434321",  # breaks a given (and a column)
    "4321214334121234",  # valid grid, but the givens are not kept
    "1234341221434312",  # the last row repeats nothing, but a box and columns break
    "1234123412341234",  # rows fine, columns broken
    "123434122143432", "12343412214343211",  # a cell short, a cell over
    "1234341221434320", "1234341221434325", "123434122143432a", "",
    "9" * 100_000, "__import__('os').system('true')", "1/0" * 6, "(" * 5000 + ")" * 5000,
])
def test_wrong_malformed_and_hostile_answers_score_zero(response):
    assert get_task("sudoku").reward(_open_item(), response) == 0.0


def test_position_scores_are_per_cell():
    item = TaskItem("1000000000000002=", "1234341221434321", {"size": 4, "puzzle": "1000000000000002"})
    scores = get_task("sudoku").position_scores(item, "1234 3412 2143 4312")
    assert scores == [True] * 14 + [False, False]


@pytest.mark.parametrize("sizes,message", [
    ({"size": 6}, "sudoku size must be 4 or 9, got 6"),
    ({"max_blanks": 13}, r"a 4x4 sudoku needs 1 <= min_blanks <= max_blanks <= 12, got min_blanks=8, max_blanks=13"),
    ({"size": 9, "min_blanks": 60}, "a 9x9 sudoku needs 1 <= min_blanks <= max_blanks <= 56"),
    ({"min_blanks": 0}, "min_blanks=0"),
])
def test_bad_sizes_are_one_line_user_errors(sizes, message):
    with pytest.raises(UserError, match=message):
        get_task("sudoku", **sizes)

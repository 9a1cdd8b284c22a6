"""Sudoku, 4x4 (boxes 2x2) or 9x9 (boxes 3x3), every puzzle with exactly one solution.

The grid is written row by row as digits with 0 for a blank, the format of the sudoku data of Ye et
al. 2025 (HKUNLP/diffusion-vs-ar) and d1 (dllm-reasoning/d1):

    prompt "1000301200034001="  ->  answer "1234341221434321"  (the whole solved grid)

A puzzle is made from a random full grid by blanking cells in random order, keeping a blank only
while the puzzle still has one solution (`count_solutions` stops at 2), until the number of blanks
drawn from [min_blanks, max_blanks] is reached. The canonical problem is the solution grid, so
the held-out puzzles' solutions never appear in training (a 4x4 sudoku has only 288 grids: held
out by puzzle, a model could pass the test by remembering training grids). The verifier checks the
rules, not the string: any completion of the givens whose rows, columns and boxes each hold every
digit once is accepted (with one solution, that is the reference).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

from llada.tasks.base import ReasoningTask, TaskConfig, TaskItem, check

BLANKS = {4: (8, 10), 9: (40, 50)}  # default (min_blanks, max_blanks) per grid size
MOST_BLANKS = {4: 12, 9: 56}  # beyond these, random blanking seldom keeps one solution (4x4: 4 givens at least)


@dataclass(frozen=True)
class SudokuConfig(TaskConfig):
    size: int = 4
    """Grid side: 4 (2x2 boxes) or 9 (3x3 boxes)."""
    min_blanks: int | None = None
    """Fewest blank cells of a puzzle; None: 8 for 4x4, 40 for 9x9."""
    max_blanks: int | None = None
    """Most blank cells of a puzzle; None: 10 for 4x4, 50 for 9x9 (min_blanks where that is more)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ints("size")
        check(self.size in BLANKS, f"sudoku size must be 4 or 9, got {self.size!r}")
        lo, hi = BLANKS[self.size]
        if self.min_blanks is None:
            object.__setattr__(self, "min_blanks", lo)  # a frozen dataclass: the default resolved once, here
        self._ints("min_blanks")
        if self.max_blanks is None:
            object.__setattr__(self, "max_blanks", max(hi, self.min_blanks))
        self._ints("max_blanks")
        most = MOST_BLANKS[self.size]
        check(1 <= self.min_blanks <= self.max_blanks <= most,
              f"a {self.size}x{self.size} sudoku needs 1 <= min_blanks <= max_blanks <= {most}, "
              f"got min_blanks={self.min_blanks}, max_blanks={self.max_blanks}")


@cache
def units(size: int) -> tuple[tuple[int, ...], ...]:
    """The cell indices (row-major) of every row, column and box of a size x size grid."""
    box = {4: 2, 9: 3}[size]
    rows = [tuple(r * size + c for c in range(size)) for r in range(size)]
    cols = [tuple(r * size + c for r in range(size)) for c in range(size)]
    boxes = [tuple((br + r) * size + bc + c for r in range(box) for c in range(box))
             for br in range(0, size, box) for bc in range(0, size, box)]
    return tuple(rows + cols + boxes)


@cache
def _cell_units(size: int) -> tuple[tuple[int, int, int], ...]:
    """For each cell: (row, column, box) index."""
    box = {4: 2, 9: 3}[size]
    return tuple((i // size, i % size, (i // size) // box * box + (i % size) // box) for i in range(size * size))


class _Search:
    """Depth-first search over a grid (list of ints, 0 blank) with bitmasks of the digits each row,
    column and box holds, always filling the blank with the fewest candidates next."""

    def __init__(self, grid: list[int], size: int):
        self.grid, self.size, self.where = grid, size, _cell_units(size)
        self.full = ((1 << size) - 1) << 1  # bits 1..size
        self.rows, self.cols, self.boxes = [0] * size, [0] * size, [0] * size
        self.valid = True
        for i, v in enumerate(grid):
            if v:
                r, c, b = self.where[i]
                bit = 1 << v
                if (self.rows[r] | self.cols[c] | self.boxes[b]) & bit:
                    self.valid = False
                self._set(i, v)

    def _set(self, i: int, v: int) -> None:
        r, c, b = self.where[i]
        self.rows[r] ^= 1 << v
        self.cols[c] ^= 1 << v
        self.boxes[b] ^= 1 << v
        self.grid[i] = v

    def _unset(self, i: int, v: int) -> None:
        self._set(i, v)  # xor clears the bits again
        self.grid[i] = 0

    def run(self, limit: int, rng: random.Random | None = None) -> int:
        """Solutions found, stopping at `limit`; with `rng` the digits are tried in random order
        and the grid is left holding the first solution found."""
        if not self.valid:
            return 0
        return self._search([i for i, v in enumerate(self.grid) if v == 0], limit, rng)

    def _search(self, blanks: list[int], limit: int, rng: random.Random | None) -> int:
        if not blanks:
            return 1
        best, best_cand, best_n = -1, 0, self.size + 1
        for k, i in enumerate(blanks):
            r, c, b = self.where[i]
            cand = self.full & ~(self.rows[r] | self.cols[c] | self.boxes[b])
            n = cand.bit_count()
            if n < best_n:
                best, best_cand, best_n = k, cand, n
                if n <= 1:
                    break
        if best_n == 0:
            return 0
        cell = blanks[best]
        rest = blanks[:best] + blanks[best + 1:]
        digits = [d for d in range(1, self.size + 1) if best_cand >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        found = 0
        for d in digits:
            self._set(cell, d)
            found += self._search(rest, limit - found, rng)
            if found >= limit:
                if rng is None:
                    self._unset(cell, d)
                return found
            self._unset(cell, d)
        return found


def count_solutions(grid: list[int], size: int, limit: int = 2) -> int:
    """How many ways the blanks (0) of `grid` (row-major, size*size ints) complete it, up to `limit`."""
    return _Search(list(grid), size).run(limit)


def random_grid(size: int, rng: random.Random) -> list[int]:
    """A full valid grid drawn by the randomised search."""
    grid = [0] * (size * size)
    _Search(grid, size).run(1, rng)
    return grid


def _is_solution(cells: str, puzzle: str, size: int) -> bool:
    """Whether `cells` (size*size digit characters) keeps the givens of `puzzle` and breaks no rule."""
    digits = {str(d) for d in range(1, size + 1)}
    if len(cells) != size * size or not set(cells) <= digits:
        return False
    if any(p != "0" and p != c for p, c in zip(puzzle, cells, strict=True)):
        return False
    return all({cells[i] for i in unit} == digits for unit in units(size))


class Sudoku(ReasoningTask):
    name = "sudoku"
    config_class = SudokuConfig
    config: SudokuConfig
    max_tries_per_item = 50  # a draw costs a grid and its blanking: fail sooner when a split runs dry

    def sample(self, rng: random.Random, split: str) -> TaskItem | None:
        size = self.config.size
        solution = random_grid(size, rng)
        answer = "".join(map(str, solution))
        if self.split_of_key(answer) != split:  # decided before the costly blanking
            return None
        want = rng.randint(self.config.min_blanks, self.config.max_blanks)
        puzzle, blank = list(solution), 0
        cells = list(range(size * size))
        rng.shuffle(cells)
        for i in cells:
            if blank == want:
                break
            puzzle[i] = 0
            if count_solutions(puzzle, size, 2) == 1:
                blank += 1
            else:
                puzzle[i] = solution[i]
        if blank < want:
            return None
        given = "".join(map(str, puzzle))
        return TaskItem(given + "=", answer, {"size": size, "puzzle": given})

    def key(self, item: TaskItem) -> str:
        return item.answer  # the one solution

    def positions(self, answer: str) -> list[str]:
        return list("".join(answer.split()))  # one position per cell; spaces or line breaks between them ignored

    def verify(self, item: TaskItem, response: str) -> bool:
        size = item.problem["size"]
        if len(response) > 4 * size * size:  # room for a separator after each cell; longer is not a grid
            return False
        return _is_solution("".join(response.split()), item.problem["puzzle"], size)

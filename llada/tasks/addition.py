"""Multi-digit addition, the answer written most significant digit first: "37+45=" -> "82".

Written this way, a left-to-right decoder must produce the leading digit before the carries that
decide it; a masked diffusion model may fill the units first. Operands are drawn uniformly from
the numbers with min_digits to max_digits digits (0..99 by default: every 2-digit pair). The
canonical problem is the unordered pair, so "45+37" is held out with "37+45".
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llada.tasks.base import ReasoningTask, TaskConfig, TaskItem, check

MAX_DIGITS = 100


@dataclass(frozen=True)
class AdditionConfig(TaskConfig):
    min_digits: int = 1
    """Fewest digits of an operand (1 includes 0)."""
    max_digits: int = 2
    """Most digits of an operand."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ints("min_digits", "max_digits")
        check(1 <= self.min_digits <= self.max_digits <= MAX_DIGITS,
              f"addition needs 1 <= min_digits <= max_digits <= {MAX_DIGITS}, "
              f"got min_digits={self.min_digits}, max_digits={self.max_digits}")

    @property
    def operand_range(self) -> tuple[int, int]:
        """(lowest, highest) operand."""
        return (0 if self.min_digits == 1 else 10 ** (self.min_digits - 1)), 10 ** self.max_digits - 1


class Addition(ReasoningTask):
    name = "addition"
    config_class = AdditionConfig
    config: AdditionConfig

    def sample(self, rng: random.Random, split: str) -> TaskItem:
        lo, hi = self.config.operand_range
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        return TaskItem(f"{a}+{b}=", str(a + b), {"a": a, "b": b})

    def key(self, item: TaskItem) -> str:
        a, b = sorted((item.problem["a"], item.problem["b"]))
        return f"{a}+{b}"

    def verify(self, item: TaskItem, response: str) -> bool:
        # compared as text: a response of a million digits is never turned into an int
        return response.strip() == str(item.problem["a"] + item.problem["b"])

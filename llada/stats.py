"""The statistics `llada reproduce` and `llada.tasks.evaluate` report: an accuracy with its binomial
standard error, the paired difference of two models on the same items, and the rule a claim is judged by.

Every figure is an accuracy over n items with its standard error sqrt(p (1 - p) / n); a difference
between two models on the same items carries the paired standard error sd(a - b) / sqrt(n). A
claim holds when the difference it predicts exceeds two standard errors (`exceeds_two_se`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Accuracy:
    """k correct of n, with the binomial standard error."""

    correct: int
    n: int

    @classmethod
    def of(cls, hits: list[bool]) -> Accuracy:
        return cls(sum(map(bool, hits)), len(hits))

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def stderr(self) -> float:
        p = self.value
        return math.sqrt(p * (1 - p) / self.n) if self.n else float("nan")

    def __str__(self) -> str:
        return f"{self.value:.2f} ± {self.stderr:.2f} ({self.correct}/{self.n})"

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "stderr": self.stderr, "correct": self.correct, "n": self.n}


def paired_difference(a: list[bool], b: list[bool]) -> tuple[float, float]:
    """mean(a - b) over the same items, and its standard error (sample variance, n - 1).

    Raises ValueError when the lists differ in length or are empty.
    """
    if len(a) != len(b) or not a:
        raise ValueError("paired differences need two equally long, non-empty lists")
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1)
    return mean, math.sqrt(var / len(d))


def exceeds_two_se(difference: float, stderr: float) -> bool:
    """Whether a predicted difference holds: it exceeds two of its standard errors."""
    return difference > 2 * stderr

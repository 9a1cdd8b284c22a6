"""Countdown: combine the given numbers with + - * / and parentheses to reach the target.

    prompt "3,5,7->26="  ->  answer "3*7+5"

As in the countdown of TinyZero and d1 (dllm-reasoning/d1, `diffu-grpo/reward_func.py`), every
given number is used exactly once by default (`use_all=False`: at most once). Ours, stricter than
theirs, and the same for the generator and the verifier: every intermediate result is a whole
number >= 0, so a division must be exact and a subtraction must not go below zero. A target is drawn
among the values in [1, max_target] that the numbers reach under these rules, and the reference
answer is one expression that reaches it (several may be right). The canonical problem is the
sorted numbers and the target.

The verifier never calls eval(): it parses the answer with `ast` and walks the tree, allowing only
whole-number literals that are given numbers, the four operators and parentheses; text longer than
`MAX_ANSWER_CHARS` or holding any other character is refused before parsing.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass
from functools import lru_cache

from llada.tasks.base import ReasoningTask, TaskConfig, TaskItem, check

MAX_ANSWER_CHARS = 200  # an answer over 4 numbers is a few dozen characters; more is not one
_ALLOWED = re.compile(r"[0-9+\-*/() ]+")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


@dataclass(frozen=True)
class CountdownConfig(TaskConfig):
    numbers: int = 3
    """How many numbers are given, 2 to 4."""
    max_number: int = 20
    """Each number is drawn from 1..max_number (repeats allowed)."""
    max_target: int = 100
    """Targets are drawn from the reachable values in 1..max_target."""
    use_all: bool = True
    """Every number must be used exactly once (TinyZero, d1); False: each at most once."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ints("numbers", "max_number", "max_target")
        check(2 <= self.numbers <= 4, f"countdown numbers must be 2, 3 or 4, got {self.numbers}")
        check(1 <= self.max_number <= 1000, f"max_number must be in 1..1000, got {self.max_number}")
        check(1 <= self.max_target <= 10**6, f"max_target must be in 1..1000000, got {self.max_target}")
        check(isinstance(self.use_all, bool), f"use_all must be true or false, got {self.use_all!r}")


def apply(op: str, a: int, b: int) -> int | None:
    """a op b under the countdown rules, or None where they forbid it (below 0, inexact or by 0)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    return a // b if b and a % b == 0 else None


def _join(op: str, left: tuple[str, str | None], right: tuple[str, str | None]) -> str:
    """The text of left op right, each side (text, its top operator or None) in parentheses where
    the tree needs them: a looser operator, or one as tight on the right (a-(b-c), a/(b*c), a+(b+c))."""
    p = _PRECEDENCE[op]
    (lt, lop), (rt, rop) = left, right
    if lop is not None and _PRECEDENCE[lop] < p:
        lt = f"({lt})"
    if rop is not None and _PRECEDENCE[rop] <= p:
        rt = f"({rt})"
    return f"{lt}{op}{rt}"


def reachable(numbers: tuple[int, ...]) -> dict[int, str]:
    """Every value the expressions using each of `numbers` exactly once reach under the rules,
    each with one such expression (the shortest, the first found among equals: the same on every run)."""
    return {v: text for v, (text, _) in _combine(tuple(sorted(numbers))).items()}


def _combine(numbers: tuple[int, ...]) -> dict[int, tuple[str, str | None]]:
    """value -> (expression, its top operator or None) over all of `numbers`, from the values of
    every split of them into two non-empty parts (`_part`)."""
    if len(numbers) == 1:
        return {numbers[0]: (str(numbers[0]), None)}
    out: dict[int, tuple[str, str | None]] = {}
    n = len(numbers)
    for mask in range(1, (1 << n) - 1):  # every ordered split into two non-empty parts
        left = _part(tuple(numbers[i] for i in range(n) if mask >> i & 1))
        right = _part(tuple(numbers[i] for i in range(n) if not mask >> i & 1))
        for a, ea in left.items():
            for b, eb in right.items():
                for op in "+-*/":
                    v = apply(op, a, b)
                    if v is not None:
                        text = _join(op, ea, eb)
                        if v not in out or len(text) < len(out[v][0]):  # the shortest, first found on a tie
                            out[v] = (text, op)
    return out


@lru_cache(maxsize=1024)
def _part(numbers: tuple[int, ...]) -> dict[int, tuple[str, str | None]]:
    """`_combine` of a part of a problem's numbers (at most 3), kept for later problems; a whole
    problem's values (thousands for 4 numbers) are not kept, so the cache stays small."""
    return _combine(numbers)


def reachable_any(numbers: tuple[int, ...]) -> dict[int, str]:
    """As `reachable`, using each number at most once (every non-empty subset)."""
    out: dict[int, str] = {}
    n = len(numbers)
    for mask in range(1, 1 << n):
        for v, text in reachable(tuple(numbers[i] for i in range(n) if mask >> i & 1)).items():
            if v not in out or len(text) < len(out[v]):
                out[v] = text
    return out


def value_of(text: str, numbers: list[int]) -> tuple[int, list[int]] | None:
    """(value, numbers used) of an answer expression under the rules, or None when it is not one:
    other characters, too long, not an expression of the four operators, a literal that is not a
    whole number, or a step the rules forbid."""
    if len(text) > MAX_ANSWER_CHARS or not _ALLOWED.fullmatch(text):
        return None
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # e.g. too many nested parentheses
        return None
    given = set(numbers)
    used: list[int] = []

    def walk(node: ast.AST) -> int | None:
        if isinstance(node, ast.Constant):
            ok = type(node.value) is int and node.value in given
            used.append(node.value)
            return node.value if ok else None
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = walk(node.left), walk(node.right)
            return None if a is None or b is None else apply(_OPS[type(node.op)], a, b)
        return None  # a unary minus, a name, a call, ...: not a countdown expression

    value = walk(tree)
    return None if value is None else (value, used)


class Countdown(ReasoningTask):
    name = "countdown"
    config_class = CountdownConfig
    config: CountdownConfig

    def sample(self, rng: random.Random, split: str) -> TaskItem | None:
        cfg = self.config
        numbers = [rng.randint(1, cfg.max_number) for _ in range(cfg.numbers)]
        found = reachable(tuple(numbers)) if cfg.use_all else reachable_any(tuple(numbers))
        targets = sorted(v for v in found if 1 <= v <= cfg.max_target)
        if not targets:
            return None
        target = rng.choice(targets)
        return TaskItem(f"{','.join(map(str, numbers))}->{target}=", found[target],
                        {"numbers": numbers, "target": target, "use_all": cfg.use_all})

    def key(self, item: TaskItem) -> str:
        return f"{sorted(item.problem['numbers'])}->{item.problem['target']}"

    def verify(self, item: TaskItem, response: str) -> bool:
        """An expression (optionally followed by "=target") over the given numbers reaching the target."""
        text = response.strip()
        target = item.problem["target"]
        if "=" in text:
            text, _, said = text.rpartition("=")
            if said.strip() != str(target):
                return False
        got = value_of(text.strip(), item.problem["numbers"])
        if got is None or got[0] != target:
            return False
        used, given = sorted(got[1]), sorted(item.problem["numbers"])
        if item.problem.get("use_all", True):
            return used == given
        return all(used.count(v) <= given.count(v) for v in set(used))

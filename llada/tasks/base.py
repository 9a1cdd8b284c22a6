"""What every built-in reasoning task shares: the item, the size config, the held-out split, the scores.

A task draws problems from a seeded `random.Random`, so `items(split, n, seed)` is the same list on
every machine, and the first n items of a longer call are the items of a shorter one. Whether a
problem is a training or a held-out ("test") problem is decided by a stable hash of its canonical
form (`ReasoningTask.key`: the unordered operands of a sum, the solution grid of a sudoku, ...), never
by its place in a list: a test problem cannot be a training problem whatever n, seed or sizes are
asked for, as long as `test_fraction` is the same (a smaller fraction holds out a subset).

Scores of one response, all from the item alone (so an item saved to JSON scores the same later):
    reward           1.0 when the verifier accepts the response, else 0.0; never raises
    exact            the response equals the reference answer (whitespace around it ignored)
    position_scores  the response against the reference answer position by position (`positions`)
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from llada.errors import UserError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class TaskItem:
    """One problem: the prompt, one reference answer, and the problem data its verifier reads."""

    prompt: str  # e.g. "37+45="
    answer: str  # one correct answer, e.g. "82" (a task may accept others: `ReasoningTask.reward`)
    problem: dict[str, Any] = field(default_factory=dict)  # JSON-safe: operands, givens, numbers, edges


def check(ok: bool, message: str) -> None:
    """Raise a one-line UserError with `message` unless `ok`."""
    if not ok:
        raise UserError(message)


@dataclass(frozen=True)
class TaskConfig:
    """Sizes every task has; each task's config adds its own knobs (validated in `__post_init__`)."""

    test_fraction: float = 0.1
    """Share of all problems held out as the test split (by the hash of the canonical problem), in (0, 1)."""

    def __post_init__(self) -> None:
        check(isinstance(self.test_fraction, (int, float)) and 0 < self.test_fraction < 1,
              f"test_fraction must be a number in (0, 1), got {self.test_fraction!r}")

    def _ints(self, *names: str) -> None:
        """Refuse a knob among `names` that is not an int (bool is not one)."""
        for name in names:
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool),
                  f"{name} must be an integer, got {value!r}")


class ReasoningTask:
    """A generator of problems with a held-out split, a verifier and the scores built on it.

    A task module subclasses it and sets `name` and `config_class`, then implements `sample` (one
    random problem, or None when the draw falls outside the split asked for), `key` (the canonical
    problem the split is decided by) and `verify`; `positions` says how an answer divides into
    positions (its characters unless a task says otherwise).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    max_tries_per_item: ClassVar[int] = 200  # draws per wanted item before a split counts as exhausted

    def __init__(self, config: TaskConfig | None = None):
        self.config = config if config is not None else self.config_class()

    @classmethod
    def sized(cls, **sizes: Any) -> ReasoningTask:
        """The task with `sizes` as config knobs; a one-line UserError names an unknown knob."""
        known = [f.name for f in fields(cls.config_class)]
        unknown = sorted(set(sizes) - set(known))
        check(not unknown, f"{cls.name} has no size {', '.join(unknown)}; its sizes are: {', '.join(known)}")
        return cls(cls.config_class(**sizes))

    # ------------------------------------------------------------------ what a task module implements

    def sample(self, rng: random.Random, split: str) -> TaskItem | None:
        """One random problem of `split`, or None when the draw falls in the other split."""
        raise NotImplementedError

    def key(self, item: TaskItem) -> str:
        """The canonical problem: equal for problems that must share a split."""
        raise NotImplementedError

    def verify(self, item: TaskItem, response: str) -> bool:
        """Whether `response` solves `item` (may raise on a malformed response: `reward` catches)."""
        raise NotImplementedError

    def positions(self, answer: str) -> list[str]:
        """An answer's positions, compared one by one in `position_scores` (its characters)."""
        return list(answer.strip())

    # ------------------------------------------------------------------ shared

    def split_of_key(self, key: str) -> str:
        """"test" for a `test_fraction` share of canonical problems chosen by SHA-256, else "train"."""
        digest = hashlib.sha256(f"{self.name}:{key}".encode()).digest()
        return "test" if int.from_bytes(digest[:8], "big") / 2**64 < self.config.test_fraction else "train"

    def split_of(self, item: TaskItem) -> str:
        return self.split_of_key(self.key(item))

    def items(self, split: str = "train", n: int = 100, seed: int = 0) -> list[TaskItem]:
        """The first `n` distinct problems (by prompt) of `split` drawn with `seed`.

        Raises UserError for a bad split or n, or when the split holds fewer than n problems the
        draws can find at these sizes (say how many were found).
        """
        check(split in SPLITS, f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        check(isinstance(n, int) and not isinstance(n, bool) and n >= 0, f"n must be an integer >= 0, got {n!r}")
        rng = random.Random(f"{self.name}:{split}:{seed}")  # a str seed is hashed the same on every run
        out: list[TaskItem] = []
        seen: set[str] = set()
        for _ in range(self.max_tries_per_item * n + 1000):
            if len(out) == n:
                break
            item = self.sample(rng, split)
            if item is None or item.prompt in seen or self.split_of(item) != split:
                continue
            seen.add(item.prompt)
            out.append(item)
        check(len(out) == n, f"{self.name}: only {len(out)} distinct {split} problems found at these sizes "
                             f"({self.config}); ask for fewer or widen the sizes")
        return out

    def reward(self, item: TaskItem, response: str) -> float:
        """1.0 when the verifier accepts `response`, else 0.0: the post-training reward. Never raises:
        a response is model output, and whatever it holds scores 0.0 unless it is a solution."""
        if not isinstance(response, str):
            return 0.0
        try:
            return 1.0 if self.verify(item, response) else 0.0
        except Exception:  # noqa: BLE001 - a malformed response is a wrong one
            return 0.0

    def exact(self, item: TaskItem, response: str) -> bool:
        """Whether `response` is the reference answer (surrounding whitespace ignored)."""
        return isinstance(response, str) and response.strip() == item.answer

    def position_scores(self, item: TaskItem, response: str) -> list[bool]:
        """For each position of the reference answer: whether the response has the same there
        (a response too short is wrong at the positions it lacks)."""
        want = self.positions(item.answer)
        got = self.positions(response) if isinstance(response, str) else []
        return [i < len(got) and got[i] == w for i, w in enumerate(want)]

    def conversation(self, item: TaskItem) -> list[dict[str, str]]:
        """The item as an SFT conversation: one user turn (the prompt), one assistant turn (the answer)."""
        return [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.answer}]

    def text(self, item: TaskItem) -> str:
        """The item as one line of pretraining text: the prompt followed by the answer."""
        return item.prompt + item.answer

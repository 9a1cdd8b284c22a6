"""What a claim module declares (`Claim`) and what its verdict returns (`Report`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from llada.reproduce.models import ModelName, Models

M = TypeVar("M")


@dataclass
class Report:
    """What one claim's run found: the text, table and figures `report.write` puts on disk."""

    name: str
    claim: str
    paper: str
    ours: str
    held: bool | None
    """True or False by the claim's rule; None for a claim measured without a pass/fail rule."""
    verdict: str
    table: list[list[str]]
    """Header row first; every cell already formatted."""
    results: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    recipe: str | None = None
    """The report's Recipe line when the claim's models are not the world recipe's (None: the world's)."""
    at_scale: bool = True
    """False for a run at `--size test`: its models trained for seconds to check the machinery, so
    the report says the claim was not measured, whatever its numbers."""


@dataclass(frozen=True)
class Claim(Generic[M]):
    """One claim of the paper: the models it needs, its measurement, its verdict and its plot.

    `measure` runs the models (made ready beforehand by `Models.ensure(*needs)`) and returns the
    raw per-item outcomes M; `judge` turns M into a `Report` (statistics, verdict, table);
    `plot` draws M on a matplotlib Axes.
    """

    name: str
    needs: tuple[ModelName, ...]
    measure: Callable[[Models], M]
    judge: Callable[[M], Report]
    plot: Callable[[M, Any], None]

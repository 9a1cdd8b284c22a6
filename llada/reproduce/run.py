"""Running claims by name: the names and sizes `llada reproduce` takes, the check of given models,
and one claim's run (make its models ready, measure, judge, write)."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from llada.errors import UserError
from llada.recipe import RECIPES, Recipe
from llada.reproduce import models as models_
from llada.reproduce.base import Claim
from llada.reproduce.claims import CLAIMS
from llada.reproduce.models import Models
from llada.reproduce.report import status, write

# --size -> recipe: test runs in seconds (the test suite), default fits 15 minutes on 2 CPU cores
SIZES = {"test": "test", "default": "reproduce", "large": "large"}


def claim_names(name: str) -> list[str]:
    """The claims `name` stands for: itself, or every claim for `all`; UserError for an unknown one."""
    if name == "all":
        return list(CLAIMS)
    if name not in CLAIMS:
        raise UserError(f"unknown claim {name!r}; choose one of: {', '.join(CLAIMS)}, all")
    return [name]


def recipe_for(size: str) -> Recipe:
    """The recipe of a --size; UserError for an unknown one."""
    if size not in SIZES:
        raise UserError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    return RECIPES[SIZES[size]]


def check_given(given: dict[str, str], names: list[str], seed: int, size: str, recipe: Recipe) -> None:
    """Refuse, before anything is trained, a --diffusion / --ar directory the claims `names` cannot
    use (`llada.reproduce.models.check_given_dirs` on the models those claims need)."""
    models_.check_given_dirs(given, [m for n in names for m in CLAIMS[n].needs], seed, size, recipe)


def run_claim(claim: Claim, models: Models, out: Path, setup: dict[str, Any]) -> Path:
    """Train what `claim` needs (unless ready), measure, judge, and write OUT/NAME/; its path.

    `setup` (size, seed, device, ...) goes into the report with the minutes it took, the date,
    the recipe and the command line.
    """
    started = time.perf_counter()
    print(f"reproduce {claim.name}: training what it needs, then measuring")
    models.ensure(*claim.needs)
    measured = claim.measure(models)
    report = claim.judge(measured)
    report.at_scale = setup.get("size") != "test"  # the test size trains for seconds: nothing is measured
    argv = sys.argv[2:] if sys.argv[1:2] == ["reproduce"] else [claim.name]
    context = {**setup, "minutes (training models not yet trained, then measuring)":
               round((time.perf_counter() - started) / 60, 2),
               "date": time.strftime("%Y-%m-%d"), "recipe": asdict(models.recipe),
               "command": "llada reproduce " + " ".join(argv)}
    write(report, partial(claim.plot, measured), out / claim.name, context)
    print(f"{claim.name}: {status(report)}: {report.ours}\n  report: {out / claim.name / 'report.md'}")
    return out / claim.name

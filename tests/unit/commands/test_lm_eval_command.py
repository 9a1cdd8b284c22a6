"""`llada lm-eval` hands lm-eval its arguments, with the task YAMLs that ship with llada findable."""

from __future__ import annotations

import sys

import pytest

from llada.commands import lm_eval
from llada.evaluation.presets import TASKS_DIR


@pytest.mark.parametrize("given,include", [
    ([], str(TASKS_DIR)),
    (["--include_path", "/my/tasks"], "/my/tasks"),
    (["--include_path=/my/tasks"], None),
])
def test_the_packaged_tasks_are_found_unless_an_include_path_is_given(monkeypatch, given, include):
    seen = []
    monkeypatch.setattr(lm_eval, "cli_evaluate", lambda: seen.append(list(sys.argv)))
    lm_eval.main(["--model", "llada", "--tasks", "llada_addition", *given])
    (argv,) = seen
    assert argv[:5] == ["lm-eval", "--model", "llada", "--tasks", "llada_addition"]
    paths = [argv[i + 1] for i, a in enumerate(argv) if a == "--include_path"]
    assert paths == ([include] if include else [])
    assert argv.count("--include_path=/my/tasks") == (include is None)
    assert (TASKS_DIR / "addition").is_dir() and (TASKS_DIR / "reversal_poem").is_dir()

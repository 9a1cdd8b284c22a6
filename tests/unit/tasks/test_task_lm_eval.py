"""The lm-eval task YAMLs of the built-in tasks load with --include_path and score by the verifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llada.evaluation
from llada.tasks import TASKS, TaskItem, get_task
from llada.tasks.harness import lm_eval_dataset, lm_eval_results

TASKS_DIR = Path(llada.evaluation.__file__).parent / "tasks"  # shipped with the package


@pytest.fixture(scope="module")
def loaded():
    pytest.importorskip("lm_eval")
    import inspect

    from lm_eval.tasks import TaskManager

    if "include_defaults" not in inspect.signature(TaskManager).parameters or not hasattr(TaskManager, "load"):
        pytest.skip("this lm-eval's TaskManager cannot load only the package's tasks (include_defaults / load)")
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"n": 4, "seed": 1})
    tasks = tm.load([f"llada_{name}" for name in TASKS])["tasks"]
    return {(name.split(":")[0] if isinstance(name, str) else name): t for name, t in tasks.items()}


@pytest.mark.parametrize("name", list(TASKS))
def test_yaml_builds_the_test_split_and_scores_by_the_verifier(loaded, name):
    task = loaded[f"llada_{name}"]
    docs = list(task.test_docs())
    items = get_task(name).items("test", 4, seed=1)
    assert [(task.doc_to_text(d), task.doc_to_target(d)) for d in docs] == [(it.prompt, it.answer) for it in items]
    assert task.process_results(docs[0], [items[0].answer]) == {"acc": 1.0, "exact": 1.0, "positions": 1.0}
    assert task.process_results(docs[0], ["no"]) == {"acc": 0.0, "exact": 0.0, "positions": 0.0}
    # the canvas covers the longest of the 300 answers lm-eval scores by default and its EOS, with at
    # most 2 tokens to spare: a model fine-tuned with one EOS per answer was never taught what
    # follows it, so a longer canvas fills with noise (digits are one token each)
    longest = max(len(it.answer) for it in get_task(name).items("test", 300, 0))
    assert longest + 1 <= task.config.generation_kwargs["max_gen_toks"] <= longest + 3


def test_a_correct_answer_other_than_the_reference_gets_acc_but_not_exact():
    doc = {"prompt": "3,5,7->26=", "answer": "3*7+5",
           "problem": json.dumps({"numbers": [3, 5, 7], "target": 26, "use_all": True})}
    assert lm_eval_results("countdown", doc, ["5+7*3"]) == {"acc": 1.0, "exact": 0.0, "positions": 0.2}
    doc = {"prompt": "", "answer": "102", "problem": json.dumps({"a": 57, "b": 45})}
    assert lm_eval_results("addition", doc, ["112"]) == {"acc": 0.0, "exact": 0.0, "positions": 2 / 3}
    assert lm_eval_results("addition", doc, []) == {"acc": 0.0, "exact": 0.0, "positions": 0.0}


def test_metadata_sizes_reach_the_task_and_other_keys_are_left_alone():
    ds = lm_eval_dataset("sudoku", size=9, n=2, seed=3, version=1.0, poem_data="x.json")["test"]
    assert len(ds) == 2 and all(len(r["answer"]) == 81 for r in ds)
    item = TaskItem(ds[0]["prompt"], ds[0]["answer"], json.loads(ds[0]["problem"]))
    assert get_task("sudoku", size=9).reward(item, item.answer) == 1.0
    assert [r["prompt"] for r in ds] == [it.prompt for it in get_task("sudoku", size=9).items("test", 2, seed=3)]


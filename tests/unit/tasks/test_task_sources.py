"""The registry, and a task as a data source: `task:NAME` through the SFT and pretraining loaders."""

from __future__ import annotations

import pytest

from llada.data.pretrain import load_texts
from llada.data.sft import load_conversations
from llada.errors import UserError
from llada.tasks import TASKS, VALIDATION_ITEMS, get_task, parse_source


def test_registry_holds_the_four_tasks():
    assert list(TASKS) == ["addition", "sudoku", "countdown", "path"]
    for name, cls in TASKS.items():
        assert get_task(name).name == name and isinstance(get_task(name), cls)


def test_unknown_task_is_a_one_line_user_error():
    with pytest.raises(UserError, match="unknown task 'chess'; choose one of: addition, sudoku, countdown, path"):
        get_task("chess")


@pytest.mark.parametrize("name", list(TASKS))
def test_sft_source_holds_training_problems_only(name):
    source = f"task:{name}:n=40"
    task = get_task(name)
    train = load_conversations(source, split="train", seed=0)
    validation = load_conversations(source, split="validation", seed=0)
    assert len(train) == 40 and len(validation) == 4  # a tenth as many, never trained on
    held_out = {it.prompt for it in task.items("test", 40, seed=0)}
    prompts = [c[0]["content"] for c in train + validation]
    assert not set(prompts) & held_out and len(set(prompts)) == 44
    items = {it.prompt: it for it in task.items("train", 44, seed=0)}
    for conv in train + validation:
        user, assistant = conv
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert task.reward(items[user["content"]], assistant["content"]) == 1.0
    assert load_conversations(source, split="train", seed=0) == train
    assert load_conversations(source, split="train", seed=1) != train


def test_sizes_in_the_source_reach_the_task():
    convs = load_conversations("task:addition:min_digits=3,max_digits=3,n=20,test_fraction=0.2")
    for user, assistant in convs:
        a, b = user["content"][:-1].split("+")
        assert len(a) == len(b) == 3 and assistant["content"] == str(int(a) + int(b))
    sudoku = load_conversations("task:sudoku:size=9,n=2")
    assert len(sudoku[0][0]["content"]) == 82


def test_pretraining_source_is_one_problem_and_answer_a_document():
    texts = list(load_texts("task:addition:n=30", split="train")["text"])
    assert len(texts) == 30
    for text in texts:
        question, answer = text.split("=")
        a, b = question.split("+")
        assert answer == str(int(a) + int(b))
    held_out = {it.prompt + it.answer for it in get_task("addition").items("test", 300)}
    assert not set(texts + list(load_texts("task:addition:n=30", split="validation")["text"])) & held_out


def test_default_count_and_validation_cap():
    task, n = parse_source("task:addition")
    assert (task.name, n) == ("addition", 5000)
    assert len(load_conversations("task:addition", split="validation")) == VALIDATION_ITEMS


@pytest.mark.parametrize("source,message", [
    ("task:chess", "unknown task 'chess'"),
    ("task:addition:digits=3", "addition has no size digits; its sizes are: test_fraction, min_digits, max_digits"),
    ("task:addition:max_digits", r"'max_digits' is not knob=value; write task:NAME:knob=value,knob=value"),
    ("task:addition:n=0", "n must be a whole number >= 1, got 0"),
    ("task:addition:n=many", "n must be a whole number >= 1, got 'many'"),
    ("task:sudoku:size=5", "sudoku size must be 4 or 9, got 5"),
    ("task:addition:max_digits=1,n=500", "addition: only .* distinct train problems found"),
])
def test_bad_sources_are_one_line_user_errors(source, message):
    with pytest.raises(UserError, match=message) as e:
        load_conversations(source)
    assert "\n" not in str(e.value)

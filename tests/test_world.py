"""The built-in world: deterministic, split cleanly, and honest about fact directions."""

from __future__ import annotations

import re

import pytest

from llada.data.world import EVAL_TASKS, World


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


def test_deterministic_by_seed(world):
    assert World(seed=0).pretrain_documents() == world.pretrain_documents()
    assert World(seed=1).pretrain_documents() != world.pretrain_documents()


def test_splits_are_disjoint_and_sized(world):
    train, val = world.pretrain_documents("train"), world.pretrain_documents("validation")
    assert not set(train) & set(val)
    assert 0.5e6 < sum(map(len, train)) < 3e6
    assert len(val) > 100


def test_names_unique(world):
    names = [p.name for p in world.people]
    assert len(set(names)) == len(names)
    assert not set(names) & set(world.cities)


def test_reversal_facts_never_stated_backwards(world):
    text = "\n".join(world.pretrain_documents("train") + world.pretrain_documents("validation"))
    sft = "\n".join(m["content"] for c in world.sft_conversations() for m in c["messages"])
    items = world.eval_items("fact_reverse")
    things = {i["prompt"].removeprefix("Who invented the ").removesuffix("?"): i["answer"] for i in items}
    sentences = text.replace("\n", " ").split(". ")
    pattern = re.compile("|".join(re.escape(t) for t in things))
    mentions = [(s, m.group(0)) for s in sentences for m in [pattern.search(s)] if m]
    # every sentence naming a group-B invention names its inventor first
    for sentence, thing in mentions:
        assert 0 <= sentence.find(things[thing]) < sentence.find(thing), sentence
    assert {t for _, t in mentions} == set(things)  # and each forward fact is in the corpus
    assert not pattern.search(sft)  # group B's inventions never appear in the SFT set


def test_arithmetic_is_correct_and_held_out(world):
    train = "\n".join(world.pretrain_documents("train"))
    items = world.eval_items("arithmetic")
    assert len(items) > 100
    for item in items[:200]:
        x, op, y = item["prompt"].removeprefix("What is ").removesuffix("?").split()
        value = {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[op]
        assert item["answer"] == str(value)
        assert item["options"][item["label"]] == item["answer"]
        assert f"{x} {op} {y} = " not in train


@pytest.mark.parametrize("task", EVAL_TASKS)
def test_eval_items_well_formed(world, task):
    items = world.eval_items(task, limit=50)
    assert len(items) == 50
    for item in items:
        assert item["options"][item["label"]] == item["answer"]
        assert len(set(item["options"])) == len(item["options"])


def test_sft_conversations_shape(world):
    convs = world.sft_conversations()
    assert len(convs) > 1000
    assert any(len(c["messages"]) == 4 for c in convs)  # some multi-turn
    for c in convs[:100]:
        roles = [m["role"] for m in c["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant"


def test_unknown_task(world):
    with pytest.raises(ValueError, match="unknown task 'nope'; choose one of: fact_forward"):
        world.eval_items("nope")

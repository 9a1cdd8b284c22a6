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


@pytest.mark.parametrize("per_doc", [1, 2, 6])
def test_reversal_facts_never_stated_backwards(per_doc):
    world = World(seed=0, n_people=40, n_stories=50, n_sums=100, sentences_per_document=per_doc)
    docs = world.pretrain_documents("train") + world.pretrain_documents("validation")
    sft = "\n".join(m["content"] for c in world.sft_conversations() for m in c["messages"])
    items = world.eval_items("fact_reverse")
    things = {i["prompt"].removeprefix("Who invented the ").removesuffix("?"): i["answer"] for i in items}
    pattern = re.compile("|".join(re.escape(t) for t in things))
    mentions = [(d, m.group(0)) for d in docs for m in [pattern.search(d)] if m]
    # every document naming a group-B invention names its inventor before it
    for doc, thing in mentions:
        assert 0 <= doc.find(things[thing]) < doc.find(thing), doc
    assert {t for _, t in mentions} == set(things)  # and each forward fact is in the corpus
    # SFT asks group B forward only: each answer names the inventor before the invention
    for thing, person in things.items():
        assert f"Who invented the {thing}?" not in sft
        assert f"What did {person} invent?" in sft
        for line in sft.splitlines():
            if thing in line:
                assert 0 <= line.find(person) < line.find(thing), line


def test_documents_name_their_person_once(world):
    small = World(seed=0, n_people=6, n_stories=0, n_sums=0, bios_per_person=2, sentences_per_document=2,
                  pronouns=True)
    docs = small.pretrain_documents("train")
    assert len(docs) == 6 * 2 * 3  # six facts in documents of two sentences, two paraphrases each
    for doc in docs:
        named = [p.name for p in small.people if p.name in doc]
        assert len(named) == 1 and doc.count(named[0]) == 1, doc
        assert doc.startswith(named[0]) or doc.startswith("The ") or doc.startswith("By trade"), doc


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


@pytest.mark.parametrize("pronouns", [False, True])
def test_infill_items_blank_every_mention_and_keep_the_clues_after(pronouns):
    world = World(seed=0, n_people=10, n_stories=0, n_sums=0, pronouns=pronouns)
    docs = set(world.pretrain_documents("train")) | set(world.pretrain_documents("validation"))
    for item, person in zip(world.eval_items("infill"), world.people, strict=True):
        assert item["answer"] == person.name
        assert all(person.name not in s for s in item["segments"])
        assert person.name.join(item["segments"]) in docs
        assert len(item["segments"]) == (2 if pronouns else 7)  # one mention, or one per fact (six)
        assert person.invention not in item["segments"][0]  # the clues stand after the first blank
        assert item["options"][item["label"]] == person.name


def test_world_config_is_validated():
    from llada.data.world import WorldConfig

    with pytest.raises(ValueError, match="at least two people"):
        WorldConfig(n_people=1)
    with pytest.raises(ValueError, match="sentences_per_document must be in 1..6"):
        WorldConfig(sentences_per_document=7)
    with pytest.raises(TypeError, match="unknown world field"):
        World(seed=0, n_persons=3)


@pytest.mark.parametrize("field,value,most", [("n_people", 577, "576"), ("n_cities", 10_001, "10,000"),
                                              ("n_countries", 600_000, "10,000")])
def test_a_world_too_large_to_name_is_refused_when_configured(field, value, most):
    """n_countries 600,000 drew fresh two-syllable names forever (there are about 500,000); n_people
    past one invention each failed only once the world was built."""
    from llada.data.world import WorldConfig

    with pytest.raises(ValueError, match=f"{field} must be at most {most}, got {value:,}"):
        WorldConfig(**{field: value})
    assert len(World(0, WorldConfig(n_people=576, n_stories=0, n_sums=0)).people) == 576


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_world_too_large_is_one_line_on_the_command_line(command, capsys, tmp_path):
    from support.cli import _one_error_line

    from llada.cli import main

    args = ["--out_dir", str(tmp_path)] + (["--model", str(tmp_path / "absent")] if command == "eval" else [])
    assert main([command, "--world.n_countries", "600000", *args]) == 2
    assert _one_error_line(capsys.readouterr().err, command).endswith("n_countries must be at most 10,000, got 600,000")

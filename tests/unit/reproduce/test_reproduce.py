"""Recipes, statistics and the checks `llada reproduce` makes before it trains: files, figures and
their arithmetic (tests/integration/test_reproduce_runs.py runs every claim at the test size)."""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from llada.commands.reproduce import reproduce
from llada.recipe import RECIPES, train_recipe
from llada.reproduce import Accuracy, check_given, paired_difference


def test_accuracy_and_paired_difference_against_direct_formulas():
    rng = random.Random(0)
    a = [rng.random() < 0.7 for _ in range(50)]
    b = [rng.random() < 0.4 for _ in range(50)]
    acc = Accuracy.of(a)
    p = sum(a) / 50
    assert acc.value == p and math.isclose(acc.stderr, math.sqrt(p * (1 - p) / 50))
    d = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    mean = sum(d) / 50
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 49)
    got, se = paired_difference(a, b)
    assert math.isclose(got, mean) and math.isclose(se, sd / math.sqrt(50))
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


def test_train_recipe_reuses_a_finished_stage_and_retrains_a_changed_one(tmp_path, monkeypatch):
    import llada.training.trainer

    recipe = RECIPES["test"].replace(pretrain_steps=4, sft_steps=2)
    pt, ft = train_recipe(recipe, tmp_path, progress=False)
    assert (pt / "model.safetensors").exists() and (ft / "model.safetensors").exists()
    cfg = json.loads((ft / "training_config.json").read_text())
    assert cfg["stage"] == "sft" and cfg["world"]["n_people"] == recipe.world.n_people

    calls = []
    real_run = llada.training.trainer.run
    monkeypatch.setattr(llada.training.trainer, "run", lambda c: calls.append(c.stage) or real_run(c))
    assert train_recipe(recipe, tmp_path, progress=False) == (pt, ft)
    assert calls == []  # both stages were reused
    train_recipe(recipe.replace(sft_steps=3), tmp_path, progress=False)
    assert calls == ["sft"]  # only the changed stage ran again


def test_kept_pretraining_checkpoints_are_never_resumed_by_a_changed_recipe(tmp_path):
    """keep_evaluated keeps a pretraining checkpoint at every evaluation (for the bound claim); a
    recipe whose pretraining changed trains afresh instead of resuming the old run's checkpoints."""
    recipe = RECIPES["test"].replace(pretrain_steps=4, sft_steps=2)
    pt, _ = train_recipe(recipe, tmp_path, progress=False, keep_evaluated=True)

    def kept() -> dict[str, int]:
        return {p.name: json.loads((p / "trainer" / "state.json").read_text())["config"]["max_steps"]
                for p in (pt.parent / "checkpoints").iterdir()}

    assert kept() == {"step-000001": 4, "step-000002": 4, "step-000003": 4}  # an evaluation every step
    train_recipe(recipe.replace(pretrain_steps=6), tmp_path, progress=False, keep_evaluated=True)
    assert kept() == {f"step-{s:06d}": 6 for s in range(1, 6)}  # every one from the new run


def test_reproduce_refuses_bad_input(tmp_path):
    from llada.errors import UserError

    with pytest.raises(UserError, match="unknown claim 'nope'; choose one of: reversal"):
        reproduce("nope", out_dir=str(tmp_path))
    with pytest.raises(UserError, match="--size must be one of"):
        reproduce("reversal", out_dir=str(tmp_path), size="huge")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="not a model directory"):
        reproduce("reversal", out_dir=str(tmp_path), diffusion=str(tmp_path / "missing"))


def _saved_model(root, *, causal: bool, record: dict | None = None):
    """A tiny untrained model directory, with `record` as its training_config.json."""
    from conftest import make_word_tokenizer, tiny_config

    import llada
    from llada.model import LLaDAModel

    llada.save(root, LLaDAModel(tiny_config(causal=causal)), make_word_tokenizer(["a"]))
    if record is not None:
        (root / "training_config.json").write_text(json.dumps(record))
    return root


def test_reproduce_checks_the_models_it_reuses_before_training_any(tmp_path, monkeypatch):
    import dataclasses

    import llada.training.trainer
    from llada.errors import UserError

    monkeypatch.setattr(llada.training.trainer, "run", lambda cfg: pytest.fail("trained a model before checking the flags"))
    sft = {"stage": "sft", "data": None, "seed": 0, "world": dataclasses.asdict(RECIPES["test"].world)}
    base = _saved_model(tmp_path / "base", causal=False, record={**sft, "stage": "pretrain"})
    diffusion = _saved_model(tmp_path / "d", causal=False, record={**sft, "model": str(base)})
    ar = _saved_model(tmp_path / "a", causal=True, record={**sft, "objective": "ar", "model": str(tmp_path / "gone")})
    bare = _saved_model(tmp_path / "bare", causal=False)
    (tmp_path / "damaged").mkdir()
    damaged = _saved_model(tmp_path / "damaged" / "m", causal=False)
    (damaged / "training_config.json").write_text("{not json")
    other_data = _saved_model(tmp_path / "o", causal=False, record={**sft, "data": "chats.jsonl"})
    cases = [("reversal", {"ar": diffusion}, r"--ar .*/d is a diffusion model; --ar needs an autoregressive one"),
             ("reversal", {"diffusion": ar}, r"--diffusion .*/a is an autoregressive model; --diffusion needs a "
                                             "diffusion one"),
             ("reversal", {"diffusion": bare}, r"--diffusion .*/bare has no training_config.json"),
             ("reversal", {"diffusion": damaged}, r"training_config.json: not valid JSON"),
             ("reversal", {"diffusion": other_data}, r"was trained on --data chats.jsonl, not the built-in world"),
             ("reversal", {"diffusion": base}, r"--diffusion .*/base is a pretrain model; .* fine-tuned"),
             ("reversal", {"diffusion": tmp_path}, r"--diffusion .* is not a model directory \(no config.json\)"),
             ("all", {"ar": ar}, r"--ar .*/a: cannot tell which pretrained model it was fine-tuned from")]
    for claim, given, words in cases:
        with pytest.raises(UserError, match=words):
            reproduce(claim, out_dir=str(tmp_path / "out"), size="test", progress=False,
                      **{k: str(v) for k, v in given.items()})
    assert not (tmp_path / "out").exists()  # nothing trained, no report written
    check_given({"diffusion": str(diffusion)}, ["bound"], 0, "test", RECIPES["test"])  # one it can use


def test_models_are_trained_by_ensure_and_only_looked_up_after(tmp_path, monkeypatch):
    import dataclasses

    import llada.training.trainer
    from llada.reproduce import Models

    monkeypatch.setattr(llada.training.trainer, "run", lambda cfg: pytest.fail("a look-up trained a model"))
    models = Models(tmp_path / "models", RECIPES["test"], 0, "cpu")
    for look_up in (models.directory, models.load):
        with pytest.raises(RuntimeError, match=r"call Models.ensure\('diffusion'\) first"):
            look_up("diffusion")
    sft = {"stage": "sft", "data": None, "seed": 0, "world": dataclasses.asdict(RECIPES["test"].world)}
    base = _saved_model(tmp_path / "base", causal=False, record={**sft, "stage": "pretrain"})
    tuned = _saved_model(tmp_path / "d", causal=False, record={**sft, "model": str(base)})
    given = Models(tmp_path / "models", RECIPES["test"], 0, "cpu", {"diffusion": str(tuned)})
    given.ensure("diffusion", "diffusion-pretrain")  # given, and the model it was fine-tuned from: no training
    assert (given.directory("diffusion"), given.directory("diffusion-pretrain")) == (tuned, base)
    assert given.load("diffusion") is given.load("diffusion")
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quickstart_questions_are_taught_except_the_reverse_one(seed):
    from llada.commands.quickstart import quickstart_questions
    from llada.data.world import World

    world = World(seed, RECIPES["quickstart"].world)
    sft = {m["content"] for c in world.sft_conversations() for m in c["messages"]}
    text = "\n".join(world.pretrain_documents("train"))
    questions = quickstart_questions(world)
    assert [q["question"] in sft for q in questions] == [True, True, True, False, True]
    reverse = questions[3]
    person = next(p for p in world.people if p.name == reverse["expected"])
    assert person.group == "B" and reverse["question"] == f"Who invented the {person.invention}?"
    assert f"{person.name} invented the {person.invention}" in text or \
        f"{person.name} is the one who invented the {person.invention}" in text
    assert f"the {person.invention} was invented by" not in text.lower()


@pytest.mark.parametrize("damage", ["no weights", "weights cut short", "no tokenizer", "pretrained model has no weights"])
def test_reproduce_refuses_a_reused_directory_that_does_not_load_before_training(tmp_path, monkeypatch, damage):
    """--ar DIR with a valid training record but no weights was refused only after the diffusion
    model had been trained: every reused directory (and the pretrained one it names, when needed) is
    checked up front as a checkpoint is, config, weights and tokenizer."""
    import dataclasses

    import llada.training.trainer
    from llada.errors import UserError

    monkeypatch.setattr(llada.training.trainer, "run", lambda cfg: pytest.fail("trained a model before checking the flags"))
    sft = {"stage": "sft", "data": None, "seed": 0, "world": dataclasses.asdict(RECIPES["test"].world)}
    base = _saved_model(tmp_path / "base", causal=True, record={**sft, "stage": "pretrain", "objective": "ar"})
    ar = _saved_model(tmp_path / "a", causal=True, record={**sft, "objective": "ar", "model": str(base)})
    victim = {"no weights": ar / "model.safetensors", "weights cut short": ar / "model.safetensors",
              "no tokenizer": ar / "tokenizer.json", "pretrained model has no weights": base / "model.safetensors"}[damage]
    if damage == "weights cut short":
        victim.write_bytes(victim.read_bytes()[:100])
    else:
        victim.unlink()
    with pytest.raises(UserError, match=re.escape(f"--ar {ar}")) as refused:
        reproduce("all", out_dir=str(tmp_path / "out"), size="test", progress=False, ar=str(ar))
    message = str(refused.value)
    assert "\n" not in message and "does not load" in message and str(victim.parent) in message, message
    assert not (tmp_path / "out").exists()


def test_the_best_checkpoint_is_the_lowest_logged_held_out_loss_that_was_kept(tmp_path):
    from llada.reproduce.bound import best_checkpoint

    model = tmp_path / "pretrain" / "model"
    (tmp_path / "pretrain" / "checkpoints" / "step-000020").mkdir(parents=True)
    assert best_checkpoint(model, [(10, 3.0), (20, 2.0), (30, 2.5)]) == (20, tmp_path / "pretrain" / "checkpoints" /
                                                                        "step-000020")
    assert best_checkpoint(model, [(10, 3.0), (20, 2.0), (30, 1.5)]) == (30, model)  # the end: the final model
    assert best_checkpoint(model, [(10, 1.0), (20, 2.0), (30, 2.5)]) is None  # step 10 was not kept
    assert best_checkpoint(model, []) is None

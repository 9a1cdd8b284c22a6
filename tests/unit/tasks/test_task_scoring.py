"""`llada.tasks.evaluate`: sampled answers scored by the verifier, with standard errors and positions."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_word_tokenizer, tiny_config

import llada.tasks
from llada.checkpoint import Bundle
from llada.model import LLaDAModel
from llada.tasks import get_task
from llada.tasks import scoring as scoring_module
from llada.tokenizer import CHAT_TEMPLATE


@pytest.fixture
def bundle() -> Bundle:
    tok = make_word_tokenizer(["user", "assistant", "+", "="] + [str(i) for i in range(40)])
    tok.chat_template = CHAT_TEMPLATE
    config = tiny_config(max_sequence_length=64)
    torch.manual_seed(0)
    return Bundle(LLaDAModel(config).eval(), tok, config)


def test_scores_of_answers_it_is_given(bundle, monkeypatch):
    task = get_task("addition")
    items = task.items("test", 5, seed=0)
    answers = [items[0].answer, items[1].answer + "0", " " + items[2].answer, "", items[4].answer[:-1] + "x"]
    seen = []

    def fake(model, tok, prompts, options, **kw):
        seen.extend(prompts)
        return [answers[len(seen) - len(prompts) + k] for k in range(len(prompts))]

    monkeypatch.setattr(scoring_module, "sample_text", fake)
    scores = llada.tasks.evaluate(bundle, "addition", n=5, batch_size=2)
    assert seen == [it.prompt for it in items]  # the held-out problems, in batches
    assert (scores.accuracy.correct, scores.accuracy.n) == (2, 5) and scores.exact.correct == 2
    assert scores.accuracy.stderr == pytest.approx(math.sqrt(0.4 * 0.6 / 5))
    # per position, over the items whose reference has it: the hand count
    rows = [task.position_scores(it, a) for it, a in zip(items, answers, strict=True)]
    assert scores.positions[0] == sum(r[0] for r in rows) / 5
    assert [r["reward"] for r in scores.records] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert scores.to_dict()["accuracy"]["n"] == 5


def test_a_tiny_model_runs_end_to_end(bundle):
    scores = llada.tasks.evaluate(bundle, get_task("addition"), n=3, gen_length=4, steps=4, block_length=4)
    assert scores.accuracy.n == 3 and len(scores.records) == 3
    assert all(isinstance(r["response"], str) for r in scores.records)
    assert 2 <= len(scores.positions) <= 3 and all(0 <= p <= 1 for p in scores.positions)


def test_position_accuracy_counts_only_rows_that_have_the_position():
    assert scoring_module.position_accuracy([[True, False], [True, True, False], [False]]) == [2 / 3, 1 / 2, 0.0]
    assert scoring_module.position_accuracy([]) == []

"""The reversal-poem task: loading, items, scoring and the lm-eval task YAML
(tests/integration/test_poem_runs.py runs `llada poem` and the lm-eval preset end to end).

The couplets below are invented, in the JSON structure of the reference data/poem_data.json.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from support.poem import _tiny_model_dir

from llada.errors import DataError, UserError
from llada.evaluation import poem

TASKS_DIR = Path(poem.__file__).parent / "tasks"  # the lm-eval task YAMLs shipped with the package


def test_items_ask_for_the_next_and_the_previous_line(data_file):
    couplets = poem.load_couplets(data_file)
    forward = poem.build_items(couplets, "forward")
    reverse = poem.build_items(couplets, "reverse")
    assert [(i.prompt, i.answer) for i in forward] == [
        ("春风吹绿柳的下一句是什么？ 直接输出句子即可。", "细雨润红花"),
        ("山高云自在的下一句是什么？ 直接输出句子即可。", "水远月长明"),
        ("孤舟横野渡的下一句是什么？ 直接输出句子即可。", "老树立寒烟")]
    assert [(i.prompt, i.answer) for i in reverse] == [
        ("细雨润红花的上一句是什么？ 直接输出句子即可。", "春风吹绿柳"),
        ("水远月长明的上一句是什么？ 直接输出句子即可。", "山高云自在"),
        ("老树立寒烟的上一句是什么？ 直接输出句子即可。", "孤舟横野渡")]
    assert {i.direction for i in reverse} == {"reverse"} and reverse[1].source == "invented 2"


@pytest.mark.parametrize("response,answer,hit,exact", [
    ("细雨润红花", "细雨润红花", True, True),
    ("细雨润红花。", "细雨润红花", True, True),  # punctuation: contained, and equal once stripped
    (" 细雨 润红花 ", "细雨润红花", False, True),  # a space inside: not contained, equal once stripped
    ("下一句是：细雨润红花", "细雨润红花", True, False),  # contained in a longer answer: the reference counts it
    ("细雨润红", "细雨润红花", False, False),  # one character short
    ("", "细雨润红花", False, False),
    ("“细雨润红花！”", "细雨润红花", True, True),  # full-width quotes and exclamation mark
])
def test_scoring_rules(response, answer, hit, exact):
    assert poem.score(response, answer) == (hit, exact)


def test_accuracy_and_standard_error():
    p, se = poem.accuracy([True, False, True, True])
    assert p == 0.75 and se == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert poem.accuracy([False, False]) == (0.0, 0.0)


@pytest.mark.parametrize("content,expect", [
    ("{}", "expected a non-empty JSON list"),
    ('[{"first": "a"}]', "entry 0 needs non-empty string fields"),
    ("[1, ", "not valid UTF-8 JSON"),
])
def test_bad_files_give_one_line(tmp_path, content, expect):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=expect) as e:
        poem.load_couplets(path)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such file"):
        poem.load_couplets(tmp_path / "missing.json")
    with pytest.raises(UserError, match="unknown direction 'sideways'; choose one of: forward, reverse"):
        poem.build_items([], "sideways")


def test_poem_eval_counts_answers_it_is_given(tmp_path, data_file, monkeypatch):
    """With the generator replaced by fixed answers, the accuracies are the hand-computed ones."""
    from llada.commands import poem as poem_command

    answers = iter([
        "细雨润红花", "水远月长明。", "老树",  # forward: hit, hit, miss -> 2/3
        "春风 吹绿柳", "答：山高云自在", "孤舟横野渡",  # reverse: miss (space), hit, hit -> 2/3; exact 2/3
    ])
    monkeypatch.setattr(poem_command, "sample_text", lambda model, tok, prompts, *a, **kw: [next(answers) for _ in prompts])
    summary = poem_command.poem_eval(str(_tiny_model_dir(tmp_path / "m")), str(data_file), out_dir=str(tmp_path / "o"),
                             batch_size=2, device="cpu")
    se = math.sqrt((2 / 3) * (1 / 3) / 3)
    assert summary["forward"] == {"n": 3, "accuracy": 2 / 3, "accuracy_se": pytest.approx(se),
                                  "exact": 2 / 3, "exact_se": pytest.approx(se)}
    assert summary["reverse"]["accuracy"] == 2 / 3 and summary["reverse"]["exact"] == 2 / 3


def test_lm_eval_task_yaml_builds_the_docs(data_file):
    pytest.importorskip("lm_eval")
    import inspect

    from lm_eval.tasks import TaskManager

    if "include_defaults" not in inspect.signature(TaskManager).parameters or not hasattr(TaskManager, "load"):
        pytest.skip("this lm-eval's TaskManager cannot load only the package's tasks (include_defaults / load)")
    tm = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"poem_data": str(data_file)})
    loaded = tm.load(["reversal_poem_forward", "reversal_poem_reverse"])["tasks"]
    tasks = {name.split(":")[0] if isinstance(name, str) else name: t for name, t in loaded.items()}
    assert sorted(tasks) == ["reversal_poem_forward", "reversal_poem_reverse"]
    fwd, rev = tasks["reversal_poem_forward"], tasks["reversal_poem_reverse"]
    docs = list(fwd.test_docs())
    assert len(docs) == 3 and len(list(rev.test_docs())) == 3
    assert fwd.doc_to_text(docs[0]) == "春风吹绿柳的下一句是什么？ 直接输出句子即可。"
    assert fwd.doc_to_target(docs[0]) == "细雨润红花"
    assert fwd.process_results(docs[0], ["细雨润红花。"]) == {"acc": 1.0, "exact": 1.0}
    assert fwd.config.generation_kwargs["max_gen_toks"] == 28


def test_lm_eval_data_path_comes_from_metadata_or_the_environment(monkeypatch, data_file):
    monkeypatch.delenv(poem.DATA_ENV, raising=False)
    with pytest.raises(UserError, match="pass --metadata poem_data=FILE or set LLADA_POEM_DATA=FILE"):
        poem.data_path(None)
    monkeypatch.setenv(poem.DATA_ENV, str(data_file))
    assert poem.data_path(None) == str(data_file)
    assert poem.data_path("other.json") == "other.json"

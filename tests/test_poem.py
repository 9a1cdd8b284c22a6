"""The reversal-poem task: loading, items, scoring, `llada poem` end to end, and the lm-eval task YAML.

The couplets below are invented, in the JSON structure of the reference data/poem_data.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_word_tokenizer, tiny_config

import llada
from llada.errors import DataError, UserError
from llada.evaluation import poem
from llada.model import LLaDAModel
from llada.tokenizer import CHAT_TEMPLATE

TASKS_DIR = Path(poem.__file__).parent / "tasks"  # the lm-eval task YAMLs shipped with the package

COUPLETS = [
    {"first": "春风吹绿柳", "second": "细雨润红花", "source": "invented 1"},
    {"first": "山高云自在", "second": "水远月长明", "source": "invented 2"},
    {"first": "孤舟横野渡", "second": "老树立寒烟", "source": "invented 3"},
]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "poems.json"
    path.write_text(json.dumps(COUPLETS, ensure_ascii=False), encoding="utf-8")
    return path


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


def _tiny_model_dir(path: Path) -> Path:
    # the answer lines are whole words of this tokenizer, so the model could in principle emit them
    words = ["user", "assistant"] + [c[k] for c in COUPLETS for k in ("first", "second")]
    tok = make_word_tokenizer(words)
    tok.chat_template = CHAT_TEMPLATE  # LLaDA's, as our trained tokenizers carry it
    torch.manual_seed(0)
    llada.save(path, LLaDAModel(tiny_config(max_sequence_length=64)), tok)
    return path


def test_llada_poem_end_to_end_on_a_tiny_model(tmp_path, data_file, capsys):
    from llada.cli import main

    model_dir = _tiny_model_dir(tmp_path / "model")
    out = tmp_path / "out"
    assert main(["poem", str(model_dir), str(data_file), "--out_dir", str(out), "--gen_length", "8",
                 "--device", "cpu", "--batch_size", "4"]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["settings"]["gen_length"] == results["settings"]["steps"] == 8
    assert results["settings"]["logits_eos_inf"] is True
    items = results["items"]
    assert [(r["direction"], r["answer"]) for r in items] == (
        [("forward", c["second"]) for c in COUPLETS] + [("reverse", c["first"]) for c in COUPLETS])
    for d in poem.DIRECTIONS:
        rows = [r for r in items if r["direction"] == d]
        hits = sum(r["answer"] in r["response"] for r in rows)  # the hand count
        p = hits / len(rows)
        s = results["summary"][d]
        assert (s["n"], s["accuracy"]) == (3, p)
        assert s["accuracy_se"] == pytest.approx(math.sqrt(p * (1 - p) / 3))
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| forward | 3 |" in report and "| reverse | 3 |" in report
    assert "forward:" in capsys.readouterr().out


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


@pytest.mark.slow
def test_llada_lm_eval_preset_runs_the_poem_tasks(tmp_path, data_file, monkeypatch):
    """`llada lm-eval --preset llada-8b-instruct --tasks reversal_poem_*` end to end on a tiny model (~20 s)."""
    pytest.importorskip("lm_eval")
    from llada.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv(poem.DATA_ENV, str(data_file))
    model_dir = _tiny_model_dir(tmp_path / "m")
    assert main(["lm-eval", "--model", "llada", "--model_args", f"pretrained={model_dir}", "--device", "cpu",
                 "--preset", "llada-8b-instruct", "--tasks", "reversal_poem_forward,reversal_poem_reverse",
                 "--output_path", str(tmp_path / "out"), "--log_samples"]) == 0
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["config"]["model_args"]["gen_length"] == 28
    assert results["config"]["model_args"]["logits_eos_inf"] is True
    for d, (given, wanted) in {"forward": ("first", "second"), "reverse": ("second", "first")}.items():
        samples = [json.loads(line) for f in (tmp_path / "out").rglob(f"samples_reversal_poem_{d}_*.jsonl")
                   for line in f.read_text(encoding="utf-8").splitlines()]
        assert len(samples) == 3
        first = min(samples, key=lambda r: r["doc_id"])
        prompt, gen_args = first["arguments"]["gen_args_0"]["arg_0"], first["arguments"]["gen_args_0"]["arg_1"]
        assert "<|start_header_id|>user<|end_header_id|>" in prompt  # the chat template was applied
        assert COUPLETS[0][given] in prompt and gen_args["max_gen_toks"] == 28
        hits = sum(r["target"] in r["resps"][0][0] for r in samples)  # the hand count
        assert results["results"][f"reversal_poem_{d}"]["acc,none"] == hits / 3
        assert {r["target"] for r in samples} == {c[wanted] for c in COUPLETS}

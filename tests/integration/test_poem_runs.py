"""The poem tasks end to end: `llada poem` and `llada lm-eval --preset` on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
from support.poem import COUPLETS, _tiny_model_dir

from llada.evaluation import poem


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

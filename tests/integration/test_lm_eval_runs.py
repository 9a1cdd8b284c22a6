"""lm-eval runs end to end on tiny models: every kind of task, exact scores, and data parallel over two processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.evaluation import _save_model

import llada

QUESTIONS = [
    {"question": "who sat on the mat", "choices": ["the cat", "a dog", "the mat"], "label": 0, "answer": "cat"},
    {"question": "what ran", "choices": ["a dog", "the cat"], "label": 0, "answer": "dog"},
    {"question": "what is on the mat", "choices": ["the cat", "a dog", "the dog"], "label": 2, "answer": "cat"},
]


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    data = root / "qa.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    texts = root / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["the cat sat on the mat", "a dog ran"]))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (root / "mc.yaml").write_text(
        "task: llada_local_mc\n" + common + "output_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_target: '{{label}}'\ndoc_to_choice: '{{choices}}'\nmetric_list:\n  - metric: acc\n")
    (root / "gen.yaml").write_text(
        "task: llada_local_gen\n" + common + "output_type: generate_until\ndoc_to_text: '{{question}}'\n"
        "doc_to_target: '{{answer}}'\ngeneration_kwargs:\n  until: ['.']\n  max_gen_toks: 6\n"
        "metric_list:\n  - metric: exact_match\n")
    (root / "ppl.yaml").write_text(
        f"task: llada_local_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {texts}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n")
    return root


def _evaluate(model_dir: Path, tasks_dir: Path, tasks: list[str], extra: str = "") -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import llada.evaluation.harness  # noqa: F401  registers "llada"

    return simple_evaluate(model="llada", model_args=f"pretrained={model_dir},device=cpu{extra}", tasks=tasks,
                           task_manager=TaskManager(include_path=str(tasks_dir)), batch_size=2)["results"]


def test_multiple_choice_with_the_ar_baseline_matches_exact_scores(tmp_path, tasks_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = _save_model(tmp_path / "ar", causal=True)
    results = _evaluate(model_dir, tasks_dir, ["llada_local_mc"])
    bundle = llada.load(model_dir)
    tok = bundle.tokenizer
    hits = 0
    for q in QUESTIONS:  # exact log p(" choice" | question) for the causal model, by hand
        ctx = tok(q["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for c in q["choices"]:
            seq = ctx + tok(c, add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(bundle.model(torch.tensor([seq]))[0].double(), -1)
            scores.append(sum(logp[i - 1, seq[i]].item() for i in range(len(ctx), len(seq))))
        hits += max(range(len(scores)), key=scores.__getitem__) == q["label"]
    assert results["llada_local_mc"]["acc,none"] == pytest.approx(hits / len(QUESTIONS))


def test_diffusion_adapter_agrees_with_the_library(tmp_path, tasks_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM
    from llada.likelihood import log_likelihoods
    from llada.sampling import generate

    model_dir = _save_model(tmp_path / "dm", causal=False)
    lm = LLaDAEvalLM(str(model_dir), device="cpu", mc_num=8, mc_batch_size=5, seed=3, steps=4, block_length=4)
    reqs = [Instance("loglikelihood", {}, ("who sat on", " the mat"), 0),
            Instance("loglikelihood", {}, ("what ran", " a dog"), 0)]
    got = lm.loglikelihood(reqs, disable_tqdm=True)
    tok = lm.tokenizer
    pairs = [(tok("who sat on", add_special_tokens=False)["input_ids"], tok(" the mat", add_special_tokens=False)["input_ids"]),
             (tok("what ran", add_special_tokens=False)["input_ids"], tok(" a dog", add_special_tokens=False)["input_ids"])]
    want = log_likelihoods(lm.model, pairs, mc_num=8, batch_size=5, generator=torch.Generator().manual_seed(3))
    assert [g[0] for g in got] == pytest.approx([w.value for w in want])

    gen = lm.generate_until([Instance("generate_until", {}, ("the cat", {"until": ["mat"], "max_gen_toks": 4}), 0)],
                            disable_tqdm=True)
    out = generate(lm.model, torch.tensor([tok("the cat", add_special_tokens=False)["input_ids"]]), steps=4,
                   gen_length=4, block_length=4)
    ids = out.responses[0].tolist()
    stops = {lm.model.config.eos_token_id, lm.model.config.eot_token_id}
    ids = ids[: next((i for i, t in enumerate(ids) if t in stops), len(ids))]
    assert gen == [tok.decode(ids, skip_special_tokens=True).split("mat")[0]]


def test_end_to_end_tasks_of_every_kind(tmp_path, tasks_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = _save_model(tmp_path / "dm", causal=False)
    results = _evaluate(model_dir, tasks_dir, ["llada_local_mc", "llada_local_gen", "llada_local_ppl"],
                        ",mc_num=4,steps=6,block_length=6")
    assert 0.0 <= results["llada_local_mc"]["acc,none"] <= 1.0
    assert results["llada_local_gen"]["exact_match,none"] in (0.0, 1 / 3, 2 / 3, 1.0)
    bpb = results["llada_local_ppl"]["bits_per_byte,none"]
    assert math.isfinite(bpb) and bpb > 0  # a bound on a random model's code length: positive


def _lm_eval_samples(out: Path) -> dict[tuple[str, int], list]:
    """(task, doc_id) -> the filtered responses that `lm-eval --log_samples` wrote under `out`."""
    rows = {}
    for f in out.rglob("samples_*.jsonl"):
        task = f.name[len("samples_"):].rsplit("_", 1)[0]
        for line in f.read_text().splitlines():
            row = json.loads(line)
            rows[task, row["doc_id"]] = row["filtered_resps"]
    return rows


def test_data_parallel_over_two_processes_matches_one(tmp_path, tasks_dir):
    """torchrun with two CPU processes (gloo): each rank scores a share, rank 0 gathers the same results."""
    model_dir = _save_model(tmp_path / "ar", causal=True)  # exact scores and greedy text: nothing random
    tasks = ["llada_local_mc", "llada_local_gen", "llada_local_ppl"]
    args = ["-m", "llada", "lm-eval", "--model", "llada", "--model_args", f"pretrained={model_dir}", "--device", "cpu",
            "--tasks", ",".join(tasks), "--include_path", str(tasks_dir), "--batch_size", "2", "--log_samples"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--output_path", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args,
                          "--output_path", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 1" in two.stderr  # the second process took part
    a, b = _lm_eval_samples(tmp_path / "one"), _lm_eval_samples(tmp_path / "two")
    assert len(a) == 2 * len(QUESTIONS) + 2 and a.keys() == b.keys()  # mc, gen: 3 docs; ppl: 2
    for key in a:
        assert a[key] == b[key], key
    ra = json.loads(next((tmp_path / "one").rglob("results_*.json")).read_text())["results"]
    rb = json.loads(next((tmp_path / "two").rglob("results_*.json")).read_text())["results"]
    assert ra == rb


def test_lm_eval_unknown_task_is_one_line(tmp_path, capsys, monkeypatch):
    from llada.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = _save_model(tmp_path / "dm", causal=False)
    assert main(["lm-eval", "--model", "llada", "--model_args", f"pretrained={model_dir}", "--device", "cpu",
                 "--tasks", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("llada lm-eval: error: unknown task(s): nope;") and "Traceback" not in "".join(err)

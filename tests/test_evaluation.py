"""The lm-eval adapter on local task definitions and local data, and the built-in `llada eval`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_word_tokenizer, tiny_config

import llada
from llada.model import LLaDAModel

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "who", "what", "is", "."]
QUESTIONS = [
    {"question": "who sat on the mat", "choices": ["the cat", "a dog", "the mat"], "label": 0, "answer": "cat"},
    {"question": "what ran", "choices": ["a dog", "the cat"], "label": 0, "answer": "dog"},
    {"question": "what is on the mat", "choices": ["the cat", "a dog", "the dog"], "label": 2, "answer": "cat"},
]


def _save_model(path: Path, causal: bool) -> Path:
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config(causal=causal, max_sequence_length=64))
    with torch.no_grad():
        model.transformer.ff_out.weight.mul_(10)
    llada.save(path, model, make_word_tokenizer(WORDS))
    return path


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


def test_unknown_model_args_are_refused(tmp_path):
    from llada.errors import UserError
    from llada.evaluation.harness import LLaDAEvalLM

    with pytest.raises(UserError, match="unknown --model_args stepz"):
        LLaDAEvalLM(str(_save_model(tmp_path / "m", causal=False)), device="cpu", stepz=3)


def test_cfg_scale_reaches_the_sampler(tmp_path):
    """--model_args cfg_scale guides generate_until too, not only the likelihood estimates."""
    from llada.evaluation.harness import LLaDAEvalLM

    lm = LLaDAEvalLM(str(_save_model(tmp_path / "m", causal=False)), device="cpu", cfg_scale=0.5, steps=4,
                     block_length=4)
    options, _, asked = lm._plan({"max_gen_toks": 4})
    assert asked == 4
    assert (lm.cfg_scale, options.cfg_scale, options.gen_length) == (0.5, 0.5, 4)


def test_task_top_k_and_top_p_reach_the_sampler(tmp_path, capsys):
    """A task's top_k / top_p generation kwargs set the sampler's, as transformers reads them (top_k
    0: none); nothing about them is reported as ignored."""
    from llada.evaluation.harness import LLaDAEvalLM

    lm = LLaDAEvalLM(str(_save_model(tmp_path / "m", causal=False)), device="cpu", steps=4, block_length=4)
    options, _, _ = lm._plan({"max_gen_toks": 4, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "do_sample": True})
    assert (options.temperature, options.top_p, options.top_k) == (0.7, 0.9, None)
    options, _, _ = lm._plan({"max_gen_toks": 4, "top_k": 5})
    assert options.top_k == 5 and "ignored" not in capsys.readouterr().err


def test_device_choice(tmp_path, capsys):
    from llada.errors import UserError
    from llada.evaluation.harness import LLaDAEvalLM, _check_device

    assert _check_device(None) is None and _check_device("cpu") == "cpu"
    with pytest.raises(UserError, match="not a torch device"):
        _check_device("gpu0")
    # lm-eval's command line passes device="cuda:0" unless told otherwise; where that GPU is absent the
    # model goes where accelerate puts it, as with lm-eval's own HF model
    absent = f"cuda:{torch.cuda.device_count()}"
    assert _check_device(absent) is None and "is not present" in capsys.readouterr().err
    lm = LLaDAEvalLM(str(_save_model(tmp_path / "m", causal=False)), device=absent)
    assert lm.model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="this machine has no cuda device; use one of: cpu"):
            _check_device("cuda")


# ------------------------------------------------------------------------------------- llada eval
@pytest.fixture(scope="module")
def world_models(tmp_path_factory) -> tuple[Path, Path]:
    """A random diffusion model and a random AR baseline with a BPE tokenizer trained on the world."""
    from llada.config import preset
    from llada.data.world import World
    from llada.tokenizer import config_ids, train_tokenizer

    root = tmp_path_factory.mktemp("world_models")
    tok = train_tokenizer(World(seed=0).pretrain_documents()[:500], vocab_size=400)
    out = []
    for name, causal in (("dm", False), ("ar", True)):
        torch.manual_seed(0)
        model = LLaDAModel(preset("debug", causal=causal, **config_ids(tok)))
        llada.save(root / name, model, tok)
        out.append(root / name)
    return out[0], out[1]


def test_llada_eval_grid_with_baseline_writes_a_report(world_models, tmp_path):
    from llada.commands.evaluate import evaluate

    dm, ar = world_models
    out = evaluate(str(dm), baseline=str(ar), tasks="fact_reverse,infill", steps="4,8", gen_length=8,
                   block_length="4,8", remasking="low_confidence,random", limit=3, mc_num=2, likelihood_docs=3,
                   out_dir=str(tmp_path / "eval"))
    data = json.loads((out / "results.json").read_text())
    settings = 2 * 2 * 2  # steps x block_length x remasking
    assert len(data["tasks"]) == 2 * settings + 2  # + the AR baseline once per task
    assert {r["kind"] for r in data["tasks"]} == {"diffusion", "autoregressive"}
    for r in data["tasks"]:
        assert r["n"] == 3 and 0 <= r["generation_accuracy"] <= 1
        if r["task"] == "infill":  # the name is blanked in every sentence: generation only
            assert r["choice_accuracy"] is None
        else:
            assert 0 <= r["choice_accuracy"] <= 1
    assert data["likelihood"]["autoregressive"]["exact"] and not data["likelihood"]["diffusion"]["exact"]
    report = (out / "report.md").read_text()
    assert "| autoregressive |" in report and "steps=8 block=4 random" in report
    assert (out / "report.png").stat().st_size > 1000


@pytest.mark.parametrize("kwargs,match", [
    (dict(tasks="fact_sideways"), "unknown task"),
    (dict(remasking="loudest"), "remasking"),
    (dict(steps="3", gen_length=8, block_length="4"), "multiple of the number of blocks"),
    (dict(steps="4,x"), "integers"),
])
def test_llada_eval_bad_input(world_models, kwargs, match):
    from llada.commands.evaluate import evaluate
    from llada.errors import UserError

    with pytest.raises(UserError, match=match):
        evaluate(str(world_models[0]), **kwargs)


def test_llada_eval_refuses_a_diffusion_baseline(world_models, tmp_path):
    from llada.commands.evaluate import evaluate
    from llada.errors import UserError

    with pytest.raises(UserError, match="--baseline must be an autoregressive model"):
        evaluate(str(world_models[0]), baseline=str(world_models[0]), tasks="arithmetic", limit=1, mc_num=1,
                 likelihood_docs=0, out_dir=str(tmp_path))


def test_llada_eval_command_line(world_models, tmp_path, capsys):
    from llada.cli import main

    dm, ar = world_models
    code = main(["eval", "--model", str(dm), "--baseline", str(ar), "--tasks", "arithmetic", "--limit", "2",
                 "--steps", "4", "--gen_length", "4", "--block_length", "4", "--mc_num", "1",
                 "--likelihood_docs", "0", "--out_dir", str(tmp_path)])
    assert code == 0 and (tmp_path / "report.md").exists()
    assert "autoregressive" in capsys.readouterr().out
    assert main(["eval", "--model", str(dm), "--tasks", "nope"]) == 2


@pytest.mark.parametrize("causal", [False, True])
def test_generate_until_in_batches_matches_one_prompt_at_a_time(tmp_path, causal, capsys):
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM
    from llada.sampling import generate
    from llada.sampling.autoregressive import generate_autoregressive
    from llada.tokenizer import config_ids, train_tokenizer

    texts = ["the cat sat on the mat", "a dog ran to the park", "what is two plus two", "four is the answer"] * 20
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    model = LLaDAModel(tiny_config(**config_ids(tok), causal=causal)).eval()
    with torch.no_grad():  # weights large enough that the answer depends on the prompt
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.2)
    llada.save(tmp_path / "m", model, tok)
    lm = LLaDAEvalLM(str(tmp_path / "m"), device="cpu", batch_size=3, steps=8, block_length=4)
    asks = [("the cat", 8), ("what is two plus two", 8), ("a dog", 4), ("four is the", 8), ("the", 8), ("a", 4)]
    reqs = [Instance("generate_until", {}, (c, {"until": ["\n\n"], "max_gen_toks": n}), k)
            for k, (c, n) in enumerate(asks)]
    got = lm.generate_until(reqs, disable_tqdm=True)

    stops = (model.config.eos_token_id, model.config.eot_token_id)
    want = []
    for c, n in asks:  # each prompt alone, straight through the library
        x = torch.tensor([tok(c, add_special_tokens=False)["input_ids"]])
        out = (generate_autoregressive(model, x, gen_length=n) if causal else
               generate(model, x, steps=8 if n == 8 else 4, gen_length=n, block_length=4))
        ids, _ = llada.sampling.text.cut_at_stop(out.responses[0].tolist(), stops)
        want.append(tok.decode(ids, skip_special_tokens=True).strip().split("\n\n")[0])
    assert got == want
    assert len(set(want)) >= 4  # the answers differ, so a mix-up between rows would show

    # do_sample=False means greedy whatever the temperature (as in transformers); a penalty is named as ignored
    greedy = Instance("generate_until", {}, ("the cat", {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": False,
                                                         "temperature": 0.7, "top_k": 5,
                                                         "repetition_penalty": 1.1}), 0)
    assert lm.generate_until([greedy], disable_tqdm=True) == want[:1]
    assert "repetition_penalty have no meaning" in capsys.readouterr().err


def test_infill_rows_blank_every_mention_of_the_name(word_tokenizer):
    from llada.evaluation.builtin import _infill_row

    tok = word_tokenizer
    item = {"segments": ["the ", " sat on a mat the ", " ran"], "answer": "dog cat"}
    ids, start, n = _infill_row(tok, item, mask_id=63)
    words = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    expected = [tok.bos_token_id, *words("the"), 63, 63, *words("sat on a mat the"), 63, 63, *words("ran")]
    assert ids == expected
    assert (start, n) == (2, 2)  # the first blank: after BOS and "the", two tokens long


# ------------------------------------------------------------------ requests at the edges of what lm-eval sends

@pytest.fixture(scope="module")
def edge_lm(tmp_path_factory):
    """A diffusion model with a 64-token context behind the adapter (few samples, few steps)."""
    from llada.evaluation.harness import LLaDAEvalLM

    model_dir = _save_model(tmp_path_factory.mktemp("edge") / "dm", causal=False)
    return LLaDAEvalLM(str(model_dir), device="cpu", mc_num=2, steps=4, block_length=4, batch_size=2)


def _requests(kind: str, *args) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def test_loglikelihood_at_the_edges(edge_lm, capsys):
    """Empty context (BOS stands in), empty continuation (log p = 0, as lm-eval's HF model answers), a context
    longer than the model's (the oldest tokens go) and a continuation longer (its last tokens are scored)."""
    long = " ".join(["the cat sat on the mat"] * 20)  # 120 words, the context holds 64 tokens
    got = edge_lm.loglikelihood(_requests("loglikelihood", ("", "the cat"), ("the cat", ""), (long, " the mat"),
                                          ("who", " " + long), ("a", " dog")), disable_tqdm=True)
    assert len(got) == 5
    assert got[1] == (0.0, True)
    for value, greedy in got[:1] + got[2:]:
        assert math.isfinite(value) and value < 0 and isinstance(greedy, bool)
    assert "only its last 63 tokens are scored" in capsys.readouterr().err


def test_loglikelihood_rolling_of_empty_and_long_text(edge_lm):
    long = " ".join(["a dog ran"] * 50)
    empty, one, many = edge_lm.loglikelihood_rolling(_requests("loglikelihood_rolling", ("",), ("the cat",), (long,)),
                                                     disable_tqdm=True)
    assert empty == 0.0 and one < 0 and many < one  # more windows, more (negative) log-likelihood


def test_generate_until_at_the_edges(edge_lm, capsys):
    """max_gen_toks 0 is answered "", more than the context holds is capped, `until` may hold empty strings or be
    a string or a tuple (a number is read as its text, with a warning), temperature may be None, the context empty."""
    asks = [("the cat", {"until": ["\n\n"], "max_gen_toks": 4}),
            ("the cat", {"until": ["", "\n\n", None], "max_gen_toks": 4}),
            ("the cat", {"until": "\n\n", "max_gen_toks": 4, "temperature": None}),
            ("the cat", {"until": ("\n\n",), "max_gen_toks": 4}),
            ("the cat", {"until": 7, "max_gen_toks": 4}),
            ("the cat", {"until": [], "max_gen_toks": 0}),
            (" ".join(["the cat sat"] * 40), {"until": [], "max_gen_toks": 200}),
            ("", {"max_gen_toks": 4})]
    got = edge_lm.generate_until(_requests("generate_until", *asks), disable_tqdm=True)
    assert len(got) == len(asks) and all(isinstance(g, str) for g in got)
    assert got[0] == got[1] == got[2] == got[3]  # empty stop strings stop nothing; a string or tuple is a list
    assert got[5] == ""
    assert len(edge_lm.tokenizer(got[6], add_special_tokens=False)["input_ids"]) <= 63
    err = capsys.readouterr().err
    assert "until should be a string or a list of strings, got 7" in err
    assert "max_gen_toks 200 does not fit the 64-token context" in err


def test_adapter_settings_that_cannot_work_are_refused(tmp_path):
    from llada.errors import UserError
    from llada.evaluation.harness import LLaDAEvalLM

    model_dir = _save_model(tmp_path / "dm", causal=False)
    with pytest.raises(UserError, match="rolling_context must be in 0..62"):
        LLaDAEvalLM(str(model_dir), device="cpu", rolling_context=63)
    with pytest.raises(UserError, match="max_length must be in 2..64"):
        LLaDAEvalLM(str(model_dir), device="cpu", max_length=100)


@pytest.mark.parametrize("args,message", [
    ({"mc_num": "abc"}, "mc_num must be an integer, got 'abc'"),
    ({"mc_num": 0}, "mc_num must be >= 1, got 0"),
    ({"mc_batch_size": 2.5}, "mc_batch_size must be an integer"),
    ({"is_greedy_check": "maybe"}, "is_greedy_check must be true or false"),
    ({"seed": True}, "seed must be an integer"),
])
def test_adapter_scoring_args_of_the_wrong_kind_are_one_line(tmp_path, args, message):
    """lm-eval hands --model_args over as ints, bools or text: a wrong one names itself before loading."""
    from llada.errors import UserError
    from llada.evaluation.harness import LLaDAEvalLM

    with pytest.raises(UserError, match=message):
        LLaDAEvalLM(str(tmp_path / "not-loaded"), device="cpu", **args)


def test_adapter_reads_scoring_args_given_as_text(tmp_path):
    from llada.evaluation.harness import LLaDAEvalLM

    lm = LLaDAEvalLM(str(_save_model(tmp_path / "dm", causal=False)), device="cpu", mc_num="4", is_greedy_check="False",
                     mc_batch_size=2)
    assert (lm.mc_num, lm.mc_batch_size, lm.greedy_check) == (4, 2, False)


def test_lm_eval_unknown_task_is_one_line(tmp_path, capsys, monkeypatch):
    from llada.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = _save_model(tmp_path / "dm", causal=False)
    assert main(["lm-eval", "--model", "llada", "--model_args", f"pretrained={model_dir}", "--device", "cpu",
                 "--tasks", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("llada lm-eval: error: unknown task(s): nope;") and "Traceback" not in "".join(err)


@torch.no_grad()
def test_loglikelihood_rolling_is_exact_for_the_ar_baseline(tmp_path):
    """Perplexity tasks (wikitext): with max_length 8 and rolling_context 2, each window of 5
    tokens is scored given the 2 before it (after the prefix token); for the autoregressive
    baseline the sum is the exact log-probability of those windows, computed here by hand."""
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM

    model_dir = _save_model(tmp_path / "ar", causal=True)
    lm = LLaDAEvalLM(str(model_dir), device="cpu", max_length=8, rolling_context=2)
    text = " ".join(WORDS * 2)
    got, = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    model, tokens = llada.load(model_dir).model, lm.tok_encode(text)
    want = 0.0
    for lo in range(0, len(tokens), 5):
        ctx = [lm.prefix_token_id] + tokens[max(0, lo - 2):lo]
        seq = ctx + tokens[lo:lo + 5]
        logp = torch.log_softmax(model(torch.tensor([seq]))[0].double(), -1)
        want += sum(logp[i - 1, seq[i]].item() for i in range(len(ctx), len(seq)))
    assert len(tokens) > 10 and got == pytest.approx(want, rel=1e-5)


def test_loglikelihood_rolling_of_a_diffusion_model_sums_the_window_estimates(tmp_path):
    """For a diffusion model each window's term is the Eq. 6 estimate; their sum is what is reported
    (in expectation at most the true log-likelihood: -sum bounds the NLL from above)."""
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM
    from llada.likelihood import log_likelihoods

    model_dir = _save_model(tmp_path / "dm", causal=False)
    text = " ".join(WORDS * 2)
    lm = LLaDAEvalLM(str(model_dir), device="cpu", max_length=8, rolling_context=2, mc_num=8, seed=5)
    got, = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    again = LLaDAEvalLM(str(model_dir), device="cpu", max_length=8, rolling_context=2, mc_num=8, seed=5)
    tokens = again.tok_encode(text)
    pairs = [([again.prefix_token_id] + tokens[max(0, lo - 2):lo], tokens[lo:lo + 5]) for lo in range(0, len(tokens), 5)]
    estimates = log_likelihoods(again.model, pairs, mc_num=8, batch_size=again.mc_batch_size, generator=again.generator)
    assert got == pytest.approx(sum(e.value for e in estimates), rel=1e-6) and got < 0


# ---- templates, tokenizers and generation kwargs of the wrong kind ---------------------------------------------

def test_harness_renders_and_encodes_within_bounds_and_types_do_sample(tmp_path):
    """lm-eval's apply_chat_template and tok_encode went to the tokenizer unbounded (a template
    building what it liked, a Rust panic escaping); a task's do_sample "false" (a string) sampled."""
    from tokenizers import Regex, normalizers

    from llada.errors import CheckpointError, UserError
    from llada.evaluation.harness import LLaDAEvalLM
    from llada.tokenizer import CHAT_TEMPLATE

    lm = LLaDAEvalLM(str(_save_model(tmp_path / "m", causal=False)), device="cpu", steps=4, block_length=4)
    lm.tokenizer.chat_template = "{% if messages|length > 1 %}{{ 'x' * 1500000 }}{% endif %}" + CHAT_TEMPLATE
    turns = [{"role": "user", "content": "who sat"}, {"role": "assistant", "content": "the cat"}]
    assert lm.apply_chat_template(turns[:1]).endswith("assistant<|end_header_id|>\n\n")
    with pytest.raises(CheckpointError, match="the chat template builds a value of about 1,500,000 characters"):
        lm.apply_chat_template(turns)
    lm.tokenizer.backend_tokenizer.normalizer = normalizers.Replace(Regex("(a|aa)+$"), "b")
    with pytest.raises(CheckpointError, match="the tokenizer fails on this text"):
        lm.tok_encode("a" * 40 + "!")
    with pytest.raises(UserError, match="do_sample must be true or false, got 'false'"):
        lm._plan({"max_gen_toks": 4, "do_sample": "false", "temperature": 5.0})
    assert lm._plan({"max_gen_toks": 4, "do_sample": False, "temperature": 5.0})[0].temperature == 0.0


def test_builtin_evaluation_renders_within_the_template_budget(word_tokenizer):
    from llada.errors import CheckpointError
    from llada.evaluation.builtin import _chat_prompt
    from llada.tokenizer import CHAT_TEMPLATE

    word_tokenizer.chat_template = "{{ ' ' * 1500000 }}" + CHAT_TEMPLATE
    with pytest.raises(CheckpointError, match="the chat template builds a value of about 1,500,000 characters"):
        _chat_prompt(word_tokenizer, "who sat on the mat")

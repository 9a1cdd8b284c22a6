"""lm-eval's local-completions model against a running server."""

from __future__ import annotations

import json

import pytest
import torch
from support.serve import (
    _readme_block,
    _reference_ids,
    _serve_cli,
    running,
    serving,
)


def _lm_eval_tasks(root, questions):
    data = root / "mc.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in questions))
    (root / "mc.yaml").write_text(
        f"task: llada_serve_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{label}}'\n"
        "doc_to_choice: '{{choices}}'\nmetric_list:\n  - metric: acc\n")
    return root


def test_lm_eval_local_completions_scores_as_the_library_does(bundle, tmp_path):
    """lm-eval's own client against the server: a loglikelihood request's value is our Eq. 6 estimate with the
    same seed (lm-eval's 1234) and mc_num, and its is_greedy is the left-to-right greedy check."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from llada.likelihood import log_likelihood, next_token_logprobs

    tok = bundle.tokenizer
    tok.save_pretrained(tmp_path / "tok")
    ctx = tok("the cat sat on", add_special_tokens=False)["input_ids"]
    greedy = ctx + [int(next_token_logprobs(bundle.model, ctx + [0], start=len(ctx))[0].argmax())]
    greedy_text = tok.decode(greedy[len(ctx):])
    with running(bundle, mc_num=5) as (url, _):
        lm = LocalCompletionsAPI(base_url=url + "/v1/completions", model="llada", tokenizer=str(tmp_path / "tok"),
                                 tokenizer_backend="huggingface")
        reqs = [Instance("loglikelihood", {}, ("the cat sat on", cont), 0) for cont in (" the mat", greedy_text)]
        got = lm.loglikelihood(reqs, disable_tqdm=True)
        until = lm.generate_until([Instance("generate_until", {}, ("the cat", {"until": ["mat"], "max_gen_toks": 6,
                                                                               "steps": 6}), 0)], disable_tqdm=True)
    ids = _reference_ids(bundle, tok("the cat", add_special_tokens=False)["input_ids"], steps=6, gen_length=6,
                         block_length=6)
    assert until == [tok.decode(ids, skip_special_tokens=True).lstrip().split("mat")[0]]
    for (value, is_greedy), (context, cont) in zip(got, [r.args for r in reqs], strict=True):
        whole = tok(context + cont, add_special_tokens=False)["input_ids"]
        c = tok(context, add_special_tokens=False)["input_ids"]
        want = log_likelihood(bundle.model, c, whole[len(c):], mc_num=5, generator=torch.Generator().manual_seed(1234))
        assert value == pytest.approx(want.value, rel=1e-6)
        lp = next_token_logprobs(bundle.model, whole, start=len(c))
        assert is_greedy == all(int(lp[j].argmax()) == t for j, t in enumerate(whole[len(c):]))
    assert got[1][1] is True


def test_readme_lm_eval_example_ranks_choices_as_the_library_does(bundle, tmp_path, monkeypatch):
    """The README's two commands as written, on the tiny model: its serve line runs through the CLI (the tiny model
    loaded in place of the directory), its lm_eval line in a subprocess with the port, tokenizer directory and task
    swapped for the test's; lm-eval's accuracy is the one the library's estimates give."""
    import os
    import shlex
    import subprocess
    import sys

    from llada.likelihood import log_likelihood

    serve_line, eval_line = _readme_block("bash", "local-completions").splitlines()
    serve_args = shlex.split(serve_line.split("&")[0])
    assert serve_args[0] == "llada"
    app, _ = _serve_cli(monkeypatch, bundle, serve_args[2:])  # the CLI builds the server, the tiny model in it
    mc_num = app.state.service.cfg.mc_num
    model_dir = serve_args[serve_args.index("--model") + 1]
    tok = bundle.tokenizer
    tok.save_pretrained(tmp_path / "model")
    questions = [{"question": "the cat sat on the", "choices": ["mat", "dog", "park"], "label": 0},
                 {"question": "a dog ran to the", "choices": ["cat", "park"], "label": 1},
                 {"question": "what is two plus", "choices": ["two", "the", "answer"], "label": 0}]
    _lm_eval_tasks(tmp_path, questions)
    with serving(app) as url:
        line = eval_line.replace("http://127.0.0.1:8000", url).replace(model_dir, str(tmp_path / "model"))
        args = shlex.split(line.replace("arc_easy", "llada_serve_mc"))
        assert args[0] == "lm_eval"
        out = subprocess.run([sys.executable, "-m", "lm_eval", *args[1:], "--include_path", str(tmp_path),
                              "--output_path", str(tmp_path / "out")], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("results*.json")
    acc = json.loads(results.read_text())["results"]["llada_serve_mc"]["acc,none"]
    hits = 0
    for q in questions:  # lm-eval's split: context tokens, then the rest of the whole text's tokens
        c = tok(q["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in q["choices"]:
            whole = tok(q["question"] + " " + choice, add_special_tokens=False)["input_ids"]
            scores.append(log_likelihood(bundle.model, c, whole[len(c):], mc_num=mc_num,
                                         generator=torch.Generator().manual_seed(1234)).value)
        hits += max(range(len(scores)), key=scores.__getitem__) == q["label"]
    assert acc == pytest.approx(hits / len(questions))

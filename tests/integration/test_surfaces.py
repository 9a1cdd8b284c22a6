"""One sample, the same on every surface: the CLI, the server and lm-eval, for diffusion and autoregressive models."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
import torch
from support.api import _chat_ids, _copy_with

import llada
from llada.cli import main
from llada.sampling import SamplerOptions, preset, sample, sample_text
from llada.sampling.autoregressive import generate_autoregressive


def _ar_answer(bundle, messages, gen_length=8) -> str:
    """The reference: generate_autoregressive on the chat prompt, decoded up to the first stop."""
    ids = torch.tensor([_chat_ids(bundle.tokenizer, messages)])
    row = generate_autoregressive(bundle.model, ids, gen_length=gen_length).responses[0].tolist()
    stops = bundle.model.config.roles.stops
    row = row[: next((k for k, t in enumerate(row) if t in stops), len(row))]
    text = bundle.tokenizer.decode(row, skip_special_tokens=True).strip()
    assert text  # the tiny model says something, so the comparisons are not "" == ""
    return text


QUESTION = "what is two plus two"


SAMPLED = {"steps": 8, "block_length": 4, "temperature": 1.0, "remasking": "random"}


def _cli_answer(model_dir, seed: int) -> str:
    args = ["generate", QUESTION, "--model", str(model_dir), "--device", "cpu", "--gen_length", "8", "--seed", str(seed)]
    for k, v in SAMPLED.items():
        args += [f"--{k}", str(v)]
    assert main(args) == 0
    return args


def _server_answer(bundle, body: dict) -> str:
    from fastapi.testclient import TestClient

    from llada.serve.app import create_app

    with TestClient(create_app(SimpleNamespace(model=bundle.model, tokenizer=bundle.tokenizer))) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}], **body})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def _lm_eval_answer(model_dir, tok, **model_args) -> str:
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM

    lm = LLaDAEvalLM(str(model_dir), device="cpu", **model_args)
    context = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                      add_generation_prompt=True)
    req = Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": 8}), 0)
    return lm.generate_until([req], disable_tqdm=True)[0]


@pytest.mark.parametrize("seed", [5, 6])
def test_cli_server_and_lm_eval_give_the_same_sample(dirs, bundles, capsys, seed):
    b = bundles["diffusion"]
    _cli_answer(dirs["diffusion"], seed)
    cli = capsys.readouterr().out.strip()
    server = _server_answer(b, {"max_tokens": 8, "seed": seed, **SAMPLED}).strip()
    harness = _lm_eval_answer(dirs["diffusion"], b.tokenizer, seed=seed, **SAMPLED).strip()
    library = sample_text(b.model, b.tokenizer, QUESTION, SamplerOptions(gen_length=8, seed=seed, **SAMPLED))[0]
    assert cli == server == harness == library and library
    other = sample_text(b.model, b.tokenizer, QUESTION, SamplerOptions(gen_length=8, seed=seed + 100, **SAMPLED))[0]
    assert other != library  # the seed decides the sample: the equality above is not vacuous


def test_presets_by_name_on_every_surface(dirs, bundles, capsys):
    b = bundles["diffusion"]
    want = sample_text(b.model, b.tokenizer, QUESTION, preset("fast").replace(gen_length=8, block_length=4))[0]
    assert want
    assert main(["generate", QUESTION, "--model", str(dirs["diffusion"]), "--device", "cpu", "--preset", "fast",
                 "--gen_length", "8", "--block_length", "4"]) == 0
    assert capsys.readouterr().out.strip() == want
    assert _server_answer(b, {"preset": "fast", "max_tokens": 8, "block_length": 4}).strip() == want
    assert _lm_eval_answer(dirs["diffusion"], b.tokenizer, preset="fast", block_length=4).strip() == want


def test_ar_model_through_generate(dirs, bundles, capsys):
    assert main(["generate", QUESTION, "--model", str(dirs["ar"]), "--device", "cpu", "--gen_length", "8"]) == 0
    assert capsys.readouterr().out.strip() == _ar_answer(bundles["ar"], [{"role": "user", "content": QUESTION}])


def test_ar_model_through_chat(dirs, bundles, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(QUESTION + "\n"))
    assert main(["chat", "--model", str(dirs["ar"]), "--device", "cpu", "--gen_length", "8"]) == 0
    replies = re.findall(r"llada> (.*?)\n(?=you> |$)", capsys.readouterr().out, re.S)  # a reply may hold newlines
    assert replies == [_ar_answer(bundles["ar"], [{"role": "user", "content": QUESTION}])]


def test_ar_model_through_serve(bundles):
    want = _ar_answer(bundles["ar"], [{"role": "user", "content": QUESTION}])
    assert _server_answer(bundles["ar"], {"max_tokens": 8}).strip() == want


def test_ar_model_through_lm_eval(dirs, bundles):
    want = _ar_answer(bundles["ar"], [{"role": "user", "content": QUESTION}])
    assert _lm_eval_answer(dirs["ar"], bundles["ar"].tokenizer).strip() == want


def test_lm_eval_answer_holds_at_most_max_gen_toks(dirs, bundles):
    """max_gen_toks 5 with blocks of 4 samples 8 tokens; the answer is cut back to the 5 asked for."""
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM
    from llada.sampling.text import decode_response

    b = bundles["diffusion"]
    stops = b.model.config.roles.stops
    opts = SamplerOptions(gen_length=8, block_length=4, seed=1234)  # what max_gen_toks 5 is fitted to
    contexts = [c for c in ("the cat sat", "a dog ran", "four is", "what is two", "the mat", "the park")
                if not set(sample(b.model, torch.tensor([b.tokenizer(c).input_ids]), opts)
                           .responses[0, :6].tolist()) & set(stops)]  # no stop before the cut: it matters
    assert contexts
    lm = LLaDAEvalLM(str(dirs["diffusion"]), device="cpu", block_length=4)
    reqs = [Instance("generate_until", {}, (c, {"until": [], "max_gen_toks": 5}), 0) for c in contexts]
    for context, got in zip(contexts, lm.generate_until(reqs, disable_tqdm=True), strict=True):
        full = sample(b.model, torch.tensor([b.tokenizer(context).input_ids]), opts).responses[0]
        assert got == decode_response(b.tokenizer, full[:5], stops)
        assert decode_response(b.tokenizer, full, stops) != got  # the rounding up was cut back


def test_cli_refuses_steps_above_gen_length_at_once(dirs, capsys):
    """`llada generate --steps 1000000000 --gen_length 32` hung; now one line, exit 2."""
    rc = main(["generate", QUESTION, "--model", str(dirs["diffusion"]), "--device", "cpu", "--steps", "1000000000",
               "--gen_length", "32", "--block_length", "32"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "steps (1000000000) must be at most gen_length (32)" in err and len(err.splitlines()) == 1


# Pass the load check (which renders "Hello") and run away on anything else: the probe's loops, a value past the bound.
SLEEPERS = {
    "loops": "{% if messages[0]['content'] != 'Hello' %}{% for i in range(100000) %}{% for j in range(100000) %}"
             "{% endfor %}{% endfor %}{% endif %}",
    "memory": "{% if messages[0]['content'] != 'Hello' %}{{ 'x' * 1500000 }}{% endif %}",
}


PANIC_TEXT = "a" * 40 + "!"  # `(a|aa)+$` gives up on it: the Rust tokenizer panics


@pytest.mark.parametrize("name", SLEEPERS)
def test_generate_renders_the_chat_template_within_its_budget(dirs, tmp_path, capsys, name):
    """`llada generate --model DIR hi` with such a template ran > 40 s (or built what it liked); now one line, exit 2."""
    root = _copy_with(dirs, tmp_path, template=SLEEPERS[name])
    rc = main(["generate", "hi", "--model", str(root), "--device", "cpu", "--gen_length", "8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "chat template" in err and len(err.splitlines()) == 1, err


def test_a_tokenizer_that_panics_is_one_line_on_generate(dirs, tmp_path, capsys):
    """A normalizer regex that gives up raised pyo3's PanicException (a BaseException) out of `llada generate`."""
    root = _copy_with(dirs, tmp_path, normalizer="(a|aa)+$")
    rc = main(["generate", PANIC_TEXT, "--model", str(root), "--device", "cpu", "--chat", "false", "--gen_length", "8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "the tokenizer fails on this text" in err and len(err.splitlines()) == 1, err
    bundle = llada.load(root)
    with pytest.raises(llada.errors.CheckpointError, match="tokenizer fails"):
        sample_text(bundle.model, bundle.tokenizer, PANIC_TEXT, SamplerOptions(gen_length=8))

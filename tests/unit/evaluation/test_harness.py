"""The lm-eval adapter on local task definitions and local data: settings, scoring arguments, the
edges of loglikelihood and generate_until, rolling windows and the chat template's budget."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import tiny_config
from support.evaluation import WORDS, _save_model

import llada
from llada.model import LLaDAModel


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


@pytest.mark.parametrize("args,message", [
    ({"gen_length": 10**9}, "prompt (1 tokens) + gen_length (1000000000) = 1000000001 exceeds the model's "
                            "max_sequence_length 64; gen_length must be in 1..63 after this prompt"),
    ({"gen_length": "64", "block_length": 4, "steps": 64}, "gen_length must be in 1..63"),
    ({"block_causal": True, "block_length": 1_000_000}, "block_length 1000000 exceeds the model's max_sequence_length "
                                                        "64: block diffusion runs whole blocks, so block_length must "
                                                        "be in 1..64"),
])
def test_model_args_lengths_past_the_model_are_refused_before_any_request(tmp_path, args, message):
    """--model_args gen_length=1000000000 failed mid-run (after the model loaded and other requests ran);
    block_causal with block_length 1000000 asked the allocator for a terabyte at the first request."""
    from llada.errors import UserError
    from llada.evaluation.harness import LLaDAEvalLM

    with pytest.raises(UserError, match=re.escape(message)) as info:
        LLaDAEvalLM(str(_save_model(tmp_path / "m", causal=False)), device="cpu", **args)
    assert "\n" not in str(info.value)


def test_block_diffusion_answers_are_capped_to_whole_blocks_of_the_context(tmp_path, capsys):
    """max_gen_toks 1000000000 with blocks of 24 in a 64-token context: the canvas may fill two blocks
    (48 positions), so the answer holds at most 47 tokens after one of context; the run samples."""
    from lm_eval.api.instance import Instance

    from llada.evaluation.harness import LLaDAEvalLM

    lm = LLaDAEvalLM(str(_save_model(tmp_path / "m", causal=False)), device="cpu", block_causal=True, block_length=24)
    options, _, asked = lm._plan({"max_gen_toks": 10**9})
    assert (asked, options.gen_length, options.canvas_length(1)) == (47, 47, 48)
    long = " ".join(["the cat sat"] * 40)
    got = lm.generate_until([Instance("generate_until", {}, (long, {"until": [], "max_gen_toks": 10**9}), 0)],
                            disable_tqdm=True)
    assert len(got) == 1 and isinstance(got[0], str)
    assert "answers hold at most 47 tokens" in capsys.readouterr().err

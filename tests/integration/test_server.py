"""The HTTP server on a tiny model, driven by raw httpx: batching, seeds, sampler settings, refusals
as 4xx, queues, timeouts, disconnects, the API key, the page's origin checks and max_tokens."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest
import torch
from support.serve import (
    _reference,
    _reference_ids,
    _with_template,
    running,
    serving,
)

from llada.sampling import SAMPLER_PRESETS, SamplerOptions
from llada.serve.app import create_app
from llada.serve.config import ServeConfig


def test_dynamic_batching_groups_concurrent_requests(bundle):
    body = {"prompt": "the cat", "max_tokens": 4, "steps": 4, "block_length": 4}
    with running(bundle, delay=0.05, max_batch=8) as (url, app):
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            rs = list(pool.map(lambda _: httpx.post(url + "/v1/completions", json=body, timeout=30), range(6)))
        assert all(r.status_code == 200 for r in rs)
        assert len({r.json()["choices"][0]["text"] for r in rs}) == 1  # same prompt, same answer in any batch
        assert max(app.state.batch_sizes) > 1


def test_batched_requests_get_the_answers_they_would_get_alone(bundle):
    """Different prompts (and lengths) batched together: each answer equals the sampler run on that prompt alone."""
    tok = bundle.tokenizer
    prompts = ["the cat", "what is two plus two", "a dog ran to the park", "four"]
    opts = {"max_tokens": 8, "steps": 8, "block_length": 4}
    with running(bundle, delay=0.05, max_batch=8) as (url, app):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            rs = list(pool.map(lambda p: httpx.post(url + "/v1/completions", json={"prompt": p, **opts}, timeout=60),
                               prompts * 2))
        assert max(app.state.batch_sizes) > 1
    for p, r in zip(prompts * 2, rs, strict=True):
        ids = [tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"]
        assert r.json()["choices"][0]["text"] == _reference(bundle, ids, steps=8, gen_length=8, block_length=4), p


def test_seeded_sampling_is_reproducible_under_load(bundle):
    tok = bundle.tokenizer
    seeded = {"prompt": "the cat", "max_tokens": 8, "steps": 8, "block_length": 8, "temperature": 1.0,
              "remasking": "random", "seed": 11}
    prompt_ids = [tok.bos_token_id] + tok("the cat", add_special_tokens=False)["input_ids"]
    want = _reference(bundle, prompt_ids, steps=8, gen_length=8, block_length=8, temperature=1.0,
                      remasking="random", generator=torch.Generator().manual_seed(11))
    others = {**seeded, "seed": None}
    with running(bundle, delay=0.02, max_batch=8) as (url, _):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            bodies = [seeded, others, others, seeded, others, seeded]
            rs = list(pool.map(lambda b: httpx.post(url + "/v1/completions", json=b, timeout=60), bodies))
    assert all(r.status_code == 200 for r in rs)
    assert [r.json()["choices"][0]["text"] for r, b in zip(rs, bodies, strict=True) if b["seed"]] == [want] * 3


def test_top_k_and_top_p_reach_the_sampler(bundle):
    """OpenAI's top_p and vLLM's top_k set the sampler's options: at temperature 1, top_k 1 (or a
    nucleus too small for a second token) leaves only the most probable token, so the answer is the
    greedy one; top_k -1 (vLLM's "off") and top_p 1 change nothing."""
    tok = bundle.tokenizer
    prompt_ids = [tok.bos_token_id] + tok("the cat", add_special_tokens=False)["input_ids"]
    greedy = _reference(bundle, prompt_ids, steps=8, gen_length=8, block_length=8)
    base = {"prompt": "the cat", "max_tokens": 8, "steps": 8, "block_length": 8, "temperature": 1.0, "seed": 3}
    sampled = _reference(bundle, prompt_ids, steps=8, gen_length=8, block_length=8, temperature=1.0,
                         generator=torch.Generator().manual_seed(3))
    assert sampled != greedy  # at temperature 1 the tiny model's answer is not the greedy one
    with running(bundle) as (url, _):
        texts = [httpx.post(url + "/v1/completions", json={**base, **extra}, timeout=60).json()["choices"][0]["text"]
                 for extra in ({"top_k": 1}, {"top_p": 1e-6}, {"top_k": -1, "top_p": 1.0})]
    assert texts == [greedy, greedy, sampled]


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"prompt": "hi", "stepz": 3}).encode(), 422, "stepz"),
    (json.dumps({"prompt": "hi", "steps": 0}).encode(), 422, "steps"),
    (json.dumps({"prompt": "hi", "threshold": 2}).encode(), 422, "threshold"),
    (json.dumps({"prompt": "hi", "remasking": "loudest"}).encode(), 422, "remasking"),
    (json.dumps({"prompt": "hi", "seed": -1}).encode(), 422, "seed"),
    (json.dumps({"prompt": "hi", "top_p": 1.5}).encode(), 422, "top_p"),
    (json.dumps({"prompt": "hi", "top_k": -5}).encode(), 422, "top_k"),
    (json.dumps({"prompt": "hi", "max_tokens": 10_000}).encode(), 400, "max_tokens"),
    (json.dumps({"prompt": "cat " * 400}).encode(), 400, "limit"),
    (json.dumps({"prompt": "x" * 3000}).encode(), 413, "exceeds"),
    (json.dumps({"prompt": ""}).encode(), 400, "empty"),
])
def test_bad_requests_are_4xx_and_the_server_stays_up(bundle, body, status, needle):
    with running(bundle, max_body_bytes=2000) as (url, _):
        r = httpx.post(url + "/v1/completions", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        assert needle in r.json()["error"]["message"]
        assert httpx.get(url + "/health").json()["status"] == "ok"


@pytest.mark.parametrize("fields,needle", [
    ({"block_causal": True, "block_length": 1_000_000, "steps": 8}, "block_length 1000000 exceeds the model's "
     "max_sequence_length 256: block diffusion runs whole blocks, so block_length must be in 1..256"),
    ({"preset": "llada2", "block_length": 8192}, "block_length 8192 exceeds the model's max_sequence_length 256"),
    ({"block_causal": True, "block_length": 200, "max_tokens": 200}, "rounded up to whole blocks of 200 = 400 exceeds "
     "the model's max_sequence_length 256; gen_length must be in 1..197 after this prompt (gen_length: max_tokens 200)"),
    ({"max_tokens": 256}, "gen_length (256) = 259 exceeds the model's max_sequence_length 256; gen_length must be in "
     "1..253 after this prompt (gen_length: max_tokens 256)"),
    ({"max_tokens": 255, "block_length": 32}, "gen_length (256) = 259 exceeds the model's max_sequence_length 256; "
     "gen_length must be in 1..253 after this prompt (gen_length: max_tokens 255 in whole blocks of 32)"),
])
def test_lengths_past_the_model_are_400_before_the_model_is_touched(bundle, fields, needle):
    """block_length 1000000 (block diffusion) was a 503 after asking the allocator for a terabyte, and
    block_length 2048-8192 held a worker until the 120 s timeout; now a 400 names the field, its value and
    the range, while the model (slowed to 30 s a pass here) never runs."""
    body = {"prompt": [5, 6, 7], "max_tokens": 100, **fields}
    with running(bundle, delay=30.0) as (url, app):
        started = time.monotonic()
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
        assert time.monotonic() - started < 30 and app.state.batch_sizes == []  # no pass of the model


def test_queue_overflow_is_429(bundle):
    body = {"prompt": "the cat", "max_tokens": 4, "steps": 4, "block_length": 4}
    with running(bundle, delay=0.2, max_batch=1, max_queue=1) as (url, _):
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: httpx.post(url + "/v1/completions", json=body, timeout=60).status_code,
                                  range(6)))
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 200


def test_timeout_is_408(bundle):
    body = {"prompt": "the cat", "max_tokens": 8, "steps": 8, "block_length": 8}
    with running(bundle, delay=0.2, timeout_s=0.3) as (url, _):
        r = httpx.post(url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 408 and "longer than" in r.json()["error"]["message"]


def test_with_an_api_key_only_the_page_and_health_answer_without_it(bundle):
    """Every route but the chat page and /health needs the key, the API's schema and unknown paths
    included; /docs and /redoc (scripts from a CDN) are not served at all."""
    key = {"Authorization": "Bearer sekret"}
    with running(bundle, api_key="sekret") as (url, _):
        for path in ("/v1/models", "/v1/sampler", "/openapi.json", "/docs", "/redoc", "/nowhere"):
            r = httpx.get(url + path)
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"], path
        r = httpx.post(url + "/v1/completions", json={"prompt": "the cat", "max_tokens": 2},
                       headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert httpx.get(url + "/").status_code == 200 and httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/v1/sampler", headers=key).status_code == 200
        assert "/v1/chat/completions" in httpx.get(url + "/openapi.json", headers=key).json()["paths"]
        assert httpx.get(url + "/docs", headers=key).status_code == 404
        assert httpx.get(url + "/redoc", headers=key).status_code == 404


def test_a_chat_template_that_fails_on_one_request_answers_it_400(bundle):
    """A template that renders the start-up conversation but raises (or runs away) on a request's messages."""
    raising = ("{% if messages[0]['content'] == 'boom' %}{{ raise_exception('no boom') }}{% endif %}"
               "{% if messages[0]['content'] == 'loop' %}{% for i in range(100000) %}{% for j in range(100000) %}"
               "{% endfor %}{% endfor %}{% endif %}" + bundle.tokenizer.chat_template)
    app = create_app(_with_template(bundle, raising), ServeConfig())
    with serving(app) as url:
        for content, needle in [("boom", "no boom"), ("loop", "does not finish")]:
            r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": content}],
                                                               "max_tokens": 2}, timeout=60)
            assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
        r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "the cat"}],
                                                           "max_tokens": 2, "steps": 2})
        assert r.status_code == 200


def test_page_is_served(bundle):
    with running(bundle) as (url, _):
        r = httpx.get(url + "/")
        assert r.status_code == 200 and "stream_states" in r.text and "/v1/chat/completions" in r.text
        sampler = httpx.get(url + "/v1/sampler").json()  # what the page fills its controls with
        assert sampler["defaults"] == SamplerOptions().to_dict()
        assert set(sampler["presets"]) == set(SAMPLER_PRESETS) and "low_confidence" in sampler["remasking"]


def test_several_prompts_in_one_request_are_several_choices(bundle):
    tok = bundle.tokenizer
    prompts = ["the cat", "a dog ran", "four"]
    body = {"prompt": prompts, "max_tokens": 4, "steps": 4}
    with running(bundle, delay=0.02) as (url, app):
        r = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
        assert app.state.batch_sizes == [3]  # one batch
    ids = [[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    answers = [_reference_ids(bundle, p, steps=4, gen_length=4, block_length=4) for p in ids]
    assert [c["index"] for c in r["choices"]] == [0, 1, 2]
    assert [c["text"] for c in r["choices"]] == [tok.decode(a, skip_special_tokens=True).lstrip() for a in answers]
    assert r["usage"]["prompt_tokens"] == sum(map(len, ids))
    assert r["usage"]["completion_tokens"] == sum(map(len, answers))
    assert r["usage"]["llada"] == {"steps": 4, "forwards": 4}  # the batch's passes, counted once


@pytest.mark.parametrize("chat,fields,needle", [
    (True, {"presence_penalty": 0.5}, "presence_penalty"), (False, {"frequency_penalty": -1}, "frequency_penalty"),
    (True, {"logit_bias": {"5": 10}}, "logit_bias"), (True, {"n": 2}, "n: 2"), (False, {"best_of": 3}, "best_of"),
    (True, {"response_format": {"type": "json_object"}}, '{"type": "text"}'),
    (True, {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tool"),
    (True, {"tool_choice": "required"}, "tool_choice"),
    (False, {"suffix": "end"}, "suffix"), (False, {"logprobs": 21}, "20"),
    (True, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "only text parts"),
    (True, {"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]}, "tool"),
    (False, {"stop": ["a", "b", "c", "d", "e"]}, "the limit is 4"),
    (False, {"stop": ["x" * 300]}, "characters"),
    (False, {"prompt": ["the cat", "a dog"], "stream": True}, "one prompt"), (False, {"prompt": ["a"] * 9}, "limit is 8"),
])
def test_values_the_sampler_cannot_honour_are_400_saying_what_is_allowed(bundle, chat, fields, needle):
    base = {"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "hi"}
    with running(bundle) as (url, _):
        r = httpx.post(url + ("/v1/chat/completions" if chat else "/v1/completions"),
                       json={**base, "max_tokens": 4, **fields}, timeout=30)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert needle in message and ("allowed" in message or "limit" in message or "only" in message)


def test_ten_thousand_stop_strings_are_refused_at_once(bundle):
    body = {"prompt": "the cat", "max_tokens": 4, "steps": 4, "stop": [f"s{i}" for i in range(10_000)]}
    with running(bundle) as (url, _):
        started = time.monotonic()
        r = httpx.post(url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 400 and "4" in r.json()["error"]["message"]
        assert time.monotonic() - started < 2


def test_pages_elsewhere_cannot_drive_a_local_server(bundle):
    """Text/plain POSTs (which a cross-origin page may send unasked) are 415; a Host that names another site (DNS
    rebinding) is 421 unless allowed; no CORS header ever invites another origin to read an answer."""
    body = json.dumps({"prompt": "the cat", "max_tokens": 4, "steps": 4})
    with running(bundle) as (url, _):
        evil = {"Origin": "http://evil.example"}
        r = httpx.post(url + "/v1/completions", content=body, headers={**evil, "Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
        assert httpx.post(url + "/v1/completions", content=body).status_code == 415  # no content type at all
        r = httpx.post(url + "/v1/completions", content=body, headers={**evil, "Content-Type": "application/json"})
        assert r.status_code == 200 and not any(h.lower().startswith("access-control") for h in r.headers)
        pre = httpx.options(url + "/v1/completions", headers={**evil, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in pre.headers
        port = url.rsplit(":", 1)[1]
        for host in ["evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"]:
            r = httpx.get(url + "/v1/models", headers={"Host": host})
            assert r.status_code == 421 and "--allowed_hosts" in r.json()["error"]["message"], host
        for host in [f"localhost:{port}", f"127.0.0.1:{port}", "[::1]"]:
            assert httpx.get(url + "/v1/models", headers={"Host": host}).status_code == 200, host
    with running(bundle, allowed_hosts=("llada.lan",)) as (url, _):
        assert httpx.get(url + "/v1/models", headers={"Host": "LLADA.lan:80"}).status_code == 200
        assert httpx.get(url + "/v1/models", headers={"Host": "evil.example"}).status_code == 421


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000, b"[]", b"null", b'"prompt"', b"{}", b'{"prompt": "a\\ud800b"}',
    b'{"messages": [{"role": "user", "content": "a\\udfffb"}]}', b'{"prompt": [1, 2, 999999]}',
    b'{"prompt": [-3]}', b'{"prompt": [[]]}', b'{"prompt": []}', b'{"prompt": [[1], "a"]}', b'{"prompt": "a", "max_tokens": 1e400}',
    b'{"prompt": "a", "temperature": NaN}', b'{"prompt": "a", "cfg_scale": Infinity}', b'{"prompt": "a", "seed": 1e30}',
    b'{"prompt": "a", "steps": 100000000000000000000000}', b'{"prompt": "a", "stop": [null]}',
    b'{"messages": [{"role": "user", "content": [1]}]}', b'{"messages": [{"role": "user", "content": [{}]}]}',
    b'{"messages": []}', b'{"prompt": "a", "logprobs": -1}', b'{"prompt": "a", "stream_options": 3}',
    b'{"prompt": "a", "max_tokens": 0, "stream": true, "echo": true}', b'\xff\xfe{}',
    b'{"prompt": "a", "max_tokens": 4, "cfg_scale": 1e308}', b'{"prompt": "a", "max_tokens": 4, "factor": 1e308}',
    b'{"prompt": "a", "max_tokens": 4, "temperature": 1e308}', b'{"prompt": "a", "max_tokens": 4, "block_length": 1e20}',
])
def test_malformed_requests_are_never_answered_5xx(bundle, body):
    path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
    with running(bundle, max_body_bytes=300_000) as (url, _):
        r = httpx.post(url + path, content=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert r.json()["error"]["message"]
        assert httpx.get(url + "/health").json()["status"] == "ok"


def test_answers_hold_at_most_max_tokens(bundle):
    """max_tokens 5 with blocks of 4: the sampler fills 8 positions, the answer (plain and streamed) keeps 5."""
    tok = bundle.tokenizer
    words = tok(" cat sat on the mat a dog ran", add_special_tokens=False)["input_ids"][:8]
    body = {"prompt": "the cat", "max_tokens": 5, "steps": 8, "block_length": 4}
    with running(bundle, tail=words) as (url, _):
        r = httpx.post(url + "/v1/completions", json=body, timeout=30).json()
        assert r["choices"][0]["text"] == tok.decode(words[:5]).lstrip() and r["choices"][0]["finish_reason"] == "length"
        assert r["usage"]["completion_tokens"] == 5
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=30) as s:
            msgs = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        assert "".join(m["choices"][0]["text"] for m in msgs) == r["choices"][0]["text"]
        assert msgs[-1]["choices"][0]["finish_reason"] == "length"
        chat = httpx.post(url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "the cat"}], "max_completion_tokens": 5, "steps": 8,
            "block_length": 4}, timeout=30).json()
        assert chat["choices"][0]["message"]["content"] == tok.decode(words[:5]).lstrip()
        assert chat["usage"]["completion_tokens"] == 5 and chat["choices"][0]["finish_reason"] == "length"


def test_usage_counts_generated_tokens_up_to_the_stop_and_the_samplers_work(bundle):
    tok = bundle.tokenizer
    words = tok(" cat sat on the mat", add_special_tokens=False)["input_ids"]
    n = len(words) + 3
    body = {"prompt": "the cat", "max_tokens": n, "steps": n, "block_length": n}
    with running(bundle, tail=words + [tok.eos_token_id] * 3) as (url, _):
        r = httpx.post(url + "/v1/completions", json=body, timeout=30).json()
        assert r["choices"][0]["text"] == "cat sat on the mat" and r["choices"][0]["finish_reason"] == "stop"
        assert r["usage"]["completion_tokens"] == len(words)  # the EOS padding is no answer
        assert r["usage"]["llada"] == {"steps": n, "forwards": n}
        r = httpx.post(url + "/v1/completions", json={**body, "stop": [" on"]}, timeout=30).json()
        assert r["choices"][0]["text"] == "cat sat" and r["choices"][0]["finish_reason"] == "stop"
        assert r["usage"]["completion_tokens"] == len(tok(" cat sat", add_special_tokens=False)["input_ids"])
        assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]


def test_text_work_stays_off_the_event_loop(bundle, monkeypatch):
    import asyncio

    from llada.serve.service import Service

    on_loop = []
    for name in ("settled_text", "state_extra", "finish", "completion_prompts"):
        original = getattr(Service, name)

        def spy(self, *a, _original=original, **k):
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)
            return _original(self, *a, **k)

        monkeypatch.setattr(Service, name, spy)
    body = {"prompt": "the cat", "max_tokens": 8, "steps": 8, "block_length": 8, "stream": True, "stream_states": True,
            "stop": ["zz"]}
    with running(bundle) as (url, _):
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
            assert sum(1 for line in r.iter_lines() if line.startswith("data: {")) >= 8
        assert httpx.post(url + "/v1/completions", json={**body, "stream": False}, timeout=30).status_code == 200
    assert len(on_loop) >= 19 and not any(on_loop)


def test_legacy_text_offsets_point_at_each_token_in_the_choice_text(bundle):
    """text_offset[i] is where token i's text starts in the choice's text: with echo, the prompt then the
    answer as its tokens read; without, the answer with its leading space dropped (its first token at 0)."""
    from llada.serve.logprobs import Scores, completion_logprobs

    tok = bundle.tokenizer
    prompt = tok("the cat", add_special_tokens=False)["input_ids"]
    answer = tok(" dog ran to the", add_special_tokens=False)["input_ids"]
    n = len(prompt) + len(answer)
    scores = Scores([None] + [-1.0] * (n - 1), [None] + [([], [])] * (n - 1))
    for echo_text, text in [("the cat", "the cat dog ran to the"), (None, "dog ran to the")]:
        lp = completion_logprobs(tok, set(tok.all_special_ids), prompt, answer, scores, echo_text)
        pieces = [tok.decode([t]) for t in (prompt if echo_text else []) + answer]
        assert lp["tokens"] == pieces and "".join(pieces).lstrip() == text.lstrip()
        first = len(prompt) if echo_text else 0
        for i, (token, at) in enumerate(zip(lp["tokens"], lp["text_offset"], strict=True)):
            shown = token.lstrip() if echo_text is None and i == first else token
            assert text[at:at + len(shown)] == shown, (echo_text, i, token, at)


def test_chat_templates_and_tokenizers_that_fail_on_a_request_answer_it_400(bundle):
    """A template passing the start-up check that builds 1.5 million characters on other messages,
    and text on which the tokenizer's normalizer panics (a 500 with a traceback in the log), are
    each a 400 naming the cause; the server stays up."""
    from tokenizers import Regex, normalizers

    template = ("{% if messages[0]['content'] != 'Hello' %}{{ 'x' * 1500000 }}{% endif %}"
                + bundle.tokenizer.chat_template)
    served = _with_template(bundle, template)
    served.tokenizer.backend_tokenizer.normalizer = normalizers.Replace(Regex("(a|aa)+$"), "b")
    app = create_app(served, ServeConfig())
    with serving(app) as url:
        r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "the cat"}],
                                                           "max_tokens": 2}, timeout=60)
        assert r.status_code == 400 and "builds a value of about 1,500,000 characters" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/completions", json={"prompt": "a" * 40 + "!", "max_tokens": 2}, timeout=60)
        assert r.status_code == 400 and "prompt[0]: the tokenizer fails on this text" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/completions", json={"prompt": "the cat", "max_tokens": 2, "steps": 2}, timeout=60)
        assert r.status_code == 200

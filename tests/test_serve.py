"""The HTTP server, driven by the official `openai` client and raw httpx, on a tiny model."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import openai
import pytest
import torch
import uvicorn

from llada.config import preset
from llada.model import LLaDAModel
from llada.sampling import SAMPLER_PRESETS, SamplerOptions, generate
from llada.serve.app import create_app
from llada.serve.config import ServeConfig
from llada.tokenizer import config_ids, train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "what is two plus two", "four is the answer"] * 20


@pytest.fixture(scope="module")
def bundle():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    model = LLaDAModel(preset("debug", **config_ids(tok))).eval()
    with torch.no_grad():  # larger weights than the default init, so that answers depend on the prompt
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0, 0.2)
    return SimpleNamespace(model=model, tokenizer=tok)


class Rigged(torch.nn.Module):
    """The same model, `delay` seconds slower per forward (to make queues and timeouts observable) and
    certain of the token `tail[i]` at the i-th of the last len(tail) positions of every sequence
    (uncached forward; None leaves a position to the model)."""

    def __init__(self, model, delay=0.0, tail=()):
        super().__init__()
        self.inner, self.delay, self.tail, self.config = model, delay, list(tail), model.config

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    def _rig(self, logits):
        if self.tail:
            logits = logits.clone()
            for i, token in enumerate(self.tail):
                if token is not None:
                    logits[:, i - len(self.tail), token] += 100.0
        return logits

    def forward(self, *a, output_positions=None, **k):
        time.sleep(self.delay)
        logits = self._rig(self.inner(*a, **k))
        if output_positions is None:
            return logits
        if isinstance(output_positions, tuple) or getattr(output_positions, "dtype", None) == torch.bool:  # (N, V)
            return logits[output_positions]
        return logits[:, output_positions]

    def forward_kv(self, *a, **k):  # the cached path is only slowed
        time.sleep(self.delay)
        return self.inner.forward_kv(*a, **k)


@contextmanager
def running(bundle, delay: float = 0.0, tail=(), **config):
    model = Rigged(bundle.model, delay, tail) if delay or tail else bundle.model
    app = create_app(SimpleNamespace(model=model, tokenizer=bundle.tokenizer), ServeConfig(**config))
    with serving(app) as url:
        yield url, app


@contextmanager
def serving(app):
    """`app` on a free loopback port, in a thread: its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _reference_ids(bundle, prompt_ids, **opts) -> list[int]:
    """The sampler's answer ids up to the first EOS / end of turn, straight from `generate`."""
    out = generate(bundle.model, torch.tensor([prompt_ids]), **opts)
    ids = out.responses[0].tolist()
    stops = {bundle.model.config.eos_token_id, bundle.model.config.eot_token_id}
    return ids[: next((i for i, t in enumerate(ids) if t in stops), len(ids))]


def _reference(bundle, prompt_ids, **opts) -> str:
    return bundle.tokenizer.decode(_reference_ids(bundle, prompt_ids, **opts), skip_special_tokens=True).lstrip()


def _chat_ids(tok, messages):
    return tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"]


def test_openai_client_completions_and_chat(bundle):
    tok = bundle.tokenizer
    opts = dict(steps=8, gen_length=8, block_length=4)
    with running(bundle) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        assert [m.id for m in client.models.list().data] == ["llada"]

        c = client.completions.create(model="llada", prompt="the cat", max_tokens=8,
                                      extra_body={"steps": 8, "block_length": 4})
        want = _reference(bundle, [tok.bos_token_id] + tok("the cat", add_special_tokens=False)["input_ids"], **opts)
        assert c.choices[0].text == want and c.usage.prompt_tokens > 0

        messages = [{"role": "user", "content": "what is two plus two"}]
        r = client.chat.completions.create(model="llada", messages=messages, max_tokens=8,
                                           extra_body={"steps": 8, "block_length": 4})
        want_chat = _reference(bundle, _chat_ids(tok, messages), **opts)
        assert r.choices[0].message.content == want_chat and r.choices[0].message.role == "assistant"

        stream = client.chat.completions.create(model="llada", messages=messages, max_tokens=8, stream=True,
                                                extra_body={"steps": 8, "block_length": 4})
        chunks = list(stream)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == want_chat
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")

        stream = client.completions.create(model="llada", prompt="the cat", max_tokens=8, stream=True,
                                           extra_body={"steps": 8, "block_length": 4})
        assert "".join(ch.choices[0].text for ch in stream) == want

        # stream_options.include_usage: a last chunk with no choices and the token counts
        chunks = list(client.chat.completions.create(model="llada", messages=messages, max_tokens=8, stream=True,
                                                     stream_options={"include_usage": True},
                                                     extra_body={"steps": 8, "block_length": 4}))
        assert chunks[-1].choices == [] and all(ch.usage is None for ch in chunks[:-1])
        assert chunks[-1].usage.prompt_tokens == len(_chat_ids(tok, messages))
        # the generated ids up to the stop, not the answer's text tokenised again
        assert chunks[-1].usage.completion_tokens == len(_reference_ids(bundle, _chat_ids(tok, messages), **opts))


def test_stream_states_show_every_step(bundle):
    body = {"messages": [{"role": "user", "content": "the cat"}], "max_tokens": 8, "steps": 8, "block_length": 8,
            "stream": True, "stream_states": True}
    with running(bundle) as (url, _):
        states = []
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    msg = json.loads(line[6:])
                    if "llada_state" in msg:
                        states.append(msg["llada_state"])
    assert [s["step"] for s in states] == list(range(8))
    assert [sum(s["masked"]) for s in states] == list(range(7, -1, -1))  # one token unmasked per step
    assert sorted(states[-1]["unmasked_at"]) == list(range(8))
    tok = bundle.tokenizer
    ids = generate(bundle.model, torch.tensor([_chat_ids(tok, body["messages"])]), steps=8, gen_length=8,
                   block_length=8).responses[0].tolist()
    assert "".join(states[-1]["pieces"]) == tok.decode(ids)
    assert states[-1]["special"] == [t in tok.all_special_ids for t in ids]


def test_stream_states_mark_end_tokens(bundle):
    body = {"messages": [{"role": "user", "content": "the cat"}], "max_tokens": 8, "steps": 8, "block_length": 8,
            "stream": True, "stream_states": True}
    with running(bundle, tail=[bundle.tokenizer.eos_token_id] * 3) as (url, _):
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            msgs = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    final = [m["llada_state"] for m in msgs if "llada_state" in m][-1]
    assert final["special"] == [False] * 5 + [True] * 3
    assert final["pieces"][5:] == [bundle.tokenizer.eos_token] * 3
    text = "".join(m["choices"][0]["delta"].get("content") or "" for m in msgs if m.get("choices"))
    assert text == "".join(final["pieces"][:5]).strip()  # the answer stops at the first end token


def test_stream_never_sends_what_it_would_take_back(bundle):
    """Left-to-right (block_length 1) through a two-byte character and towards a stop string: no chunk
    carries half a character or the start of a stop string, and the stream adds up to the plain answer."""
    tok = bundle.tokenizer
    say = tok(" café olé", add_special_tokens=False)["input_ids"]
    assert len(say) > len(" café olé".split()) + 2  # the accented letters are split across tokens
    n = len(say) + 1
    body = {"messages": [{"role": "user", "content": "the cat"}], "max_tokens": n, "steps": n, "block_length": 1}
    with running(bundle, tail=say + [tok.eos_token_id]) as (url, _):
        for stop, want in [(None, "café olé"), (["lé"], "café o"), (["é o"], "caf"), ([" c"], "")]:
            plain = httpx.post(url + "/v1/chat/completions", json={**body, "stop": stop}, timeout=30).json()
            assert "choices" in plain, plain
            assert plain["choices"][0]["message"]["content"] == want
            with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stop": stop, "stream": True},
                              timeout=30) as r:
                msgs = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
            deltas = [m["choices"][0]["delta"].get("content") or "" for m in msgs]
            assert "".join(deltas) == want and not any("\ufffd" in d for d in deltas)
            assert len([d for d in deltas if d]) >= min(3, len(want))  # it did stream, piece by piece


def test_sendable_prefix():
    from llada.serve.service import _sendable

    assert _sendable("caf\ufffd", []) == "caf"
    assert _sendable("a\ufffdb", []) == "a\ufffdb"  # an invalid byte inside the text is final
    assert _sendable("abc#", ["###"]) == "abc" and _sendable("abc##", ["###"]) == "abc"
    assert _sendable("abc###def", ["###"]) == "abc" and _sendable("a#b", ["###"]) == "a#b"
    assert _sendable("end.", ["\n\n", "."]) == "end"


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


def test_client_disconnect_mid_stream_frees_the_worker(bundle):
    body = {"prompt": "the cat", "max_tokens": 32, "steps": 32, "block_length": 32, "stream": True,
            "stream_states": True}
    with running(bundle, delay=0.05, max_batch=1) as (url, app):
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    break  # go away after the first state
        started = time.monotonic()
        quick = {"prompt": "a dog", "max_tokens": 4, "steps": 4, "block_length": 4}
        r = httpx.post(url + "/v1/completions", json=quick, timeout=30)
        assert r.status_code == 200
        # the abandoned 32-step request (>= 1.6 s of forwards) was stopped, not run to the end
        assert time.monotonic() - started < 1.5


def test_api_key(bundle):
    with running(bundle, api_key="sekret") as (url, _):
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
        client = openai.OpenAI(base_url=url + "/v1", api_key="sekret")
        assert client.models.list().data[0].id == "llada"


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


def _with_template(bundle, template: str) -> SimpleNamespace:
    tok = train_tokenizer(TEXTS, vocab_size=300)
    tok.chat_template = template
    return SimpleNamespace(model=bundle.model, tokenizer=tok)


@pytest.mark.parametrize("template,needle", [
    ("{{ raise_exception('no chat here') }}", "no chat here"),
    ("{% for i in range(100000000) %}x{% endfor %}", "OverflowError"),
])
def test_serve_refuses_to_start_with_a_chat_template_that_fails(monkeypatch, capsys, bundle, template, needle):
    """Such a template answered every chat request with a 500; the server now stops at start, in one line."""
    app, ran = _serve_cli(monkeypatch, _with_template(bundle, template), [])
    err = capsys.readouterr().err.strip()
    assert app is None and not ran and "chat template" in err and needle in err and len(err.splitlines()) == 1, err


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


# ---- what OpenAI clients send ---------------------------------------------------------------------------------

def test_openai_client_defaults_and_common_fields_are_accepted(bundle):
    """Every field the official client sends at its default (or commonly sets) is taken, and changes nothing."""
    tok = bundle.tokenizer
    opts = {"steps": 8, "block_length": 4}
    neutral = dict(presence_penalty=0, frequency_penalty=0, logit_bias={}, user="u1", n=1, seed=3,
                   stop=["###"], stream_options=None, top_p=1)
    with running(bundle) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        messages = [{"role": "developer", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "what is two "}, {"type": "text", "text": "plus two"}]}]
        r = client.chat.completions.create(
            model="llada", messages=messages, max_tokens=8, extra_body=opts, response_format={"type": "text"},
            tools=[], tool_choice="none", store=False, metadata={"run": "1"}, service_tier="auto", logprobs=False,
            top_logprobs=0, **neutral)
        plain = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is two plus two"}]
        assert r.choices[0].message.content == _reference(bundle, _chat_ids(tok, plain), gen_length=8, **opts)
        # the client's own response message sent back as history (refusal, tool_calls and all)
        again = plain + [r.choices[0].message.model_dump(), {"role": "user", "content": "the cat"}]
        assert client.chat.completions.create(model="llada", messages=again, max_tokens=8, extra_body=opts).choices

        c = client.completions.create(model="llada", prompt="the cat", max_tokens=8, extra_body=opts, best_of=1,
                                      echo=False, logprobs=None, suffix=None, **{**neutral, "stop": "###"})
        prompt_ids = [tok.bos_token_id] + tok("the cat", add_special_tokens=False)["input_ids"]
        assert c.choices[0].text == _reference(bundle, prompt_ids, gen_length=8, **opts)
        assert client.completions.create(model="llada", prompt=["the cat"], max_tokens=8, extra_body=opts,
                                         logprobs=False).choices[0].text == c.choices[0].text


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


def test_models_report_the_served_name_owner_and_length(bundle):
    with running(bundle, model_name="tiny-llada") as (url, _):
        (m,) = openai.OpenAI(base_url=url + "/v1", api_key="none").models.list().data
        assert (m.id, m.owned_by, m.model_extra["max_model_len"]) == (
            "tiny-llada", "llada", bundle.model.config.max_sequence_length)
        r = httpx.post(url + "/v1/completions", json={"prompt": "the cat", "max_tokens": 4, "model": "whatever"})
        assert r.json()["model"] == "tiny-llada"  # one model behind the server: its own name, whatever was asked


def _serve_cli(monkeypatch, bundle, args):
    """`llada serve ARGS` through the CLI with the model loader and uvicorn replaced: the app it would run
    (None when it stopped first), its exit code and what it printed to stderr."""
    import llada.checkpoint
    from llada.cli import main

    ran = {}
    monkeypatch.setattr(llada.checkpoint, "load", lambda *a, **k: bundle)
    monkeypatch.setattr(uvicorn, "run", lambda app, **k: ran.update(app=app, **k))
    return ran.get("app") if main(["serve", *args]) == 0 else None, ran


def test_serve_cli_names_the_model_after_its_directory(monkeypatch, bundle):
    from fastapi.testclient import TestClient

    for args, want in [(["--model", "runs/x/my-model/"], "my-model"),
                       (["--model", "runs/x/my-model", "--served_model_name", "mine"], "mine")]:
        app, _ = _serve_cli(monkeypatch, bundle, args)
        with TestClient(app) as client:
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [want]


@pytest.mark.parametrize("args,needle", [
    (["--host", "0.0.0.0"], "--api_key"), (["--host", "::"], "--allow_unauthenticated"),
    (["--max_queue", "0"], "max_queue"), (["--timeout_s", "0"], "timeout_s"), (["--max_gen_tokens", "0"], "max_gen_tokens"),
    (["--port", "70000"], "port"), (["--max_batch", "0"], "max_batch"), (["--mc_num", "0"], "mc_num"),
])
def test_serve_refuses_to_start_with_settings_that_fail_every_request(monkeypatch, capsys, bundle, args, needle):
    monkeypatch.delenv("LLADA_API_KEY", raising=False)
    app, ran = _serve_cli(monkeypatch, bundle, args)
    err = capsys.readouterr().err.strip()
    assert app is None and not ran and needle in err and len(err.splitlines()) == 1, err


def test_serve_beyond_loopback_when_the_user_says_so(monkeypatch, bundle):
    monkeypatch.delenv("LLADA_API_KEY", raising=False)
    for args in (["--host", "0.0.0.0", "--api_key", "k"], ["--host", "0.0.0.0", "--allow_unauthenticated", "true"]):
        app, ran = _serve_cli(monkeypatch, bundle, args)
        assert app is not None and ran["host"] == "0.0.0.0"
    app, _ = _serve_cli(monkeypatch, bundle, ["--allowed_hosts", "llada.lan, Box.Lan."])
    assert app.state.service.cfg.allowed_hosts == ("llada.lan", "box.lan")


def test_guard_checks_host_then_key_then_content_type():
    """The guard on its own, request by request: the first refusal wins, / and /health need no key, and
    the bound address is always a name of this server."""
    from llada.serve.guard import Guard, host_name, is_loopback

    assert [host_name(h) for h in ["[::1]:8000", "Example.org.", "localhost:80", "::1", ""]] == [
        "::1", "example.org", "localhost", "::1", ""]
    assert [is_loopback(h) for h in ["localhost", "127.0.0.2", "::1", "10.0.0.1", "evil.example", ""]] == [
        True, True, True, False, False, False]
    guard = Guard(None, allowed_hosts=("llada.lan",), api_key="k")

    def status(host, path="/v1/completions", method="POST", key="k", kind="application/json", server="10.0.0.5"):
        headers = [(b"host", host.encode()), (b"authorization", f"Bearer {key}".encode()),
                   (b"content-type", kind.encode())]
        refused = guard.refusal({"type": "http", "path": path, "method": method, "headers": headers,
                                 "server": (server, 8000)})
        return refused and refused[0]

    assert status("evil.example", key="wrong", kind="text/plain") == 421
    assert status("localhost:8000", key="wrong", kind="text/plain") == 401
    assert status("llada.lan", kind="text/plain; charset=utf-8") == 415
    assert status("10.0.0.5:8000") is None and status("[::1]:8000") is None
    assert status("127.0.0.1", path="/health", method="GET", key="wrong") is None
    assert status("127.0.0.1", path="/v1/models", method="GET", key="wrong") == 401


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


# ---- what an answer holds ----------------------------------------------------------------------------------------

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


# ---- logprobs: the Eq. 6 estimator in OpenAI's legacy format --------------------------------------------------

def test_echoed_logprobs_add_up_to_the_eq6_estimate_for_every_split(bundle):
    from llada.likelihood import log_likelihood, next_token_logprobs

    tok, model = bundle.tokenizer, bundle.model
    ids = tok("the cat sat on the mat", add_special_tokens=False)["input_ids"]
    body = {"prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 2, "seed": 7, "temperature": 0}
    with running(bundle, mc_num=6, mc_batch_size=4) as (url, _):
        r = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
    (choice,) = r["choices"]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(ids) + 1 and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    for k in range(1, len(ids)):  # whatever the split, the sum is the library's estimate with the same seed
        want = log_likelihood(model, ids[:k], ids[k:], mc_num=6, generator=torch.Generator().manual_seed(7)).value
        assert sum(lp["token_logprobs"][k:len(ids)]) == pytest.approx(want, rel=1e-6, abs=1e-6)
    # the generated token's value is its exact one-mask log-probability, and the token is the greedy pick
    full = ids + [_one_token(bundle, ids)]
    ntl = next_token_logprobs(model, full, start=1)
    for i in range(1, len(full)):  # one mask after the tokens before: Eq. 6 for a one-token response, exact
        one = log_likelihood(model, full[:i], full[i:i + 1], mc_num=2).value
        assert ntl[i - 1, full[i]].item() == pytest.approx(one, abs=1e-5)
    assert lp["token_logprobs"][-1] == pytest.approx(ntl[-1, full[-1]].item(), abs=1e-5)
    for i in range(1, len(full)):  # the token tops its list exactly when it is the left-to-right greedy choice
        top = lp["top_logprobs"][i]
        greedy = int(ntl[i - 1].argmax()) == full[i]
        assert (max(top.values()) == lp["token_logprobs"][i]) == greedy and len(top) <= 3
        assert top[lp["tokens"][i]] == lp["token_logprobs"][i]
    text = choice["text"]
    assert text.startswith("the cat sat on the mat")
    for tkn, at in zip(lp["tokens"][:len(ids)], lp["text_offset"][:len(ids)], strict=True):
        assert text[at:at + len(tkn)] == tkn


def test_logprobs_of_the_autoregressive_baseline_are_its_exact_token_logprobs(bundle):
    """For a causal model every E(k) is exact, so each token's value is log p(token | tokens before) by teacher
    forcing, and the top entry is the argmax of the same distribution."""
    tok = bundle.tokenizer
    torch.manual_seed(1)
    ar = LLaDAModel(preset("debug", causal=True, **config_ids(tok))).eval()
    ids = tok("a dog ran to the park", add_special_tokens=False)["input_ids"]
    body = {"prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1}
    with running(SimpleNamespace(model=ar, tokenizer=tok), mc_num=3) as (url, _):
        lp = httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["logprobs"]
    with torch.no_grad():
        logp = torch.log_softmax(ar(torch.tensor([ids]))[0].double(), -1)
    assert lp["token_logprobs"][1:] == pytest.approx([logp[i - 1, ids[i]].item() for i in range(1, len(ids))],
                                                     abs=1e-5)
    for i in range(1, len(ids)):
        greedy = int(logp[i - 1, : ar.config.vocab_size].argmax()) == ids[i]
        assert (max(lp["top_logprobs"][i].values()) == lp["token_logprobs"][i]) == greedy


def _one_token(bundle, ids) -> int:
    return generate(bundle.model, torch.tensor([ids]), steps=1, gen_length=1, block_length=1).responses[0, 0].item()


def test_logprobs_of_an_answer_add_up_to_its_estimate(bundle):
    from llada.likelihood import log_likelihood

    tok = bundle.tokenizer
    prompt = [tok.bos_token_id] + tok("the cat", add_special_tokens=False)["input_ids"]
    body = {"prompt": "the cat", "max_tokens": 4, "steps": 4, "block_length": 4, "logprobs": 0, "seed": 2}
    with running(bundle, mc_num=4) as (url, _):
        r = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
        echo0 = httpx.post(url + "/v1/completions", json={"prompt": "the cat sat", "max_tokens": 0, "echo": True},
                           timeout=60).json()
    lp = r["choices"][0]["logprobs"]
    assert r["llada"]["logprobs"] == {"estimator": "Eq. 6 Monte-Carlo", "mc_num": 4, "seed": 2}
    answer = _reference_ids(bundle, prompt, steps=4, gen_length=4, block_length=4)
    assert len(lp["tokens"]) == r["usage"]["completion_tokens"] == len(answer)
    want = log_likelihood(bundle.model, prompt, answer, mc_num=4, generator=torch.Generator().manual_seed(2)).value
    assert sum(lp["token_logprobs"]) == pytest.approx(want, rel=1e-6)
    assert all(len(t) == 1 for t in lp["top_logprobs"])  # logprobs 0: the token alone
    assert echo0["choices"][0]["text"] == "the cat sat" and echo0["usage"]["completion_tokens"] == 0


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


def test_echo_joins_prompt_and_answer_as_generated(bundle):
    """echo returns the prompt then the answer as its tokens read, the answer's leading space kept
    (the plain text drops it, having nothing to join it to); chat's logprobs tokens join into its
    content, which drops it as well."""
    tok = bundle.tokenizer
    tail = tok(" dog ran to the", add_special_tokens=False)["input_ids"]
    body = {"prompt": "the cat", "max_tokens": len(tail), "steps": len(tail), "block_length": len(tail)}
    with running(bundle, tail=tail) as (url, _):
        echoed = httpx.post(url + "/v1/completions", json={**body, "echo": True}, timeout=60).json()
        plain = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
        chat_body = {k: v for k, v in body.items() if k != "prompt"}
        chat = httpx.post(url + "/v1/chat/completions", json={**chat_body, "messages": [{"role": "user", "content": "hi"}],
                                                               "logprobs": True}, timeout=60).json()
    assert echoed["choices"][0]["text"] == "the cat dog ran to the"
    assert plain["choices"][0]["text"] == "dog ran to the"
    # chat's content drops the leading space too, and its logprobs tokens join into it
    assert chat["choices"][0]["message"]["content"] == "dog ran to the"
    assert "".join(c["token"] for c in chat["choices"][0]["logprobs"]["content"]) == "dog ran to the"


def test_chat_logprobs_in_chat_format_add_up_to_the_answers_estimate(bundle):
    """Chat's "logprobs": true, "top_logprobs": 2, read by the official client: one entry per answer
    token (its text, value, UTF-8 bytes and the two likeliest, highest first); the values are
    /v1/completions' and add up to the Eq. 6 estimate of the answer given the chat prompt."""
    from llada.likelihood import log_likelihood

    tok = bundle.tokenizer
    messages = [{"role": "user", "content": "the cat"}]
    opts = {"steps": 4, "block_length": 4, "seed": 5}
    with running(bundle, mc_num=4) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        r = client.chat.completions.create(model="llada", messages=messages, max_tokens=4, logprobs=True,
                                           top_logprobs=2, extra_body=opts)
        refused = httpx.post(url + "/v1/chat/completions", json={"messages": messages, "top_logprobs": 2}, timeout=30)
    assert refused.status_code == 400 and "top_logprobs needs logprobs" in refused.text
    content = r.choices[0].logprobs.content
    prompt = _chat_ids(tok, messages)
    answer = _reference_ids(bundle, prompt, gen_length=4, steps=4, block_length=4)
    assert len(content) == len(answer) == r.usage.completion_tokens > 0
    assert "".join(c.token for c in content) == r.choices[0].message.content  # no stop string here
    want = log_likelihood(bundle.model, prompt, answer, mc_num=4, generator=torch.Generator().manual_seed(5)).value
    assert sum(c.logprob for c in content) == pytest.approx(want, rel=1e-6)
    for c in content:
        assert bytes(c.bytes).decode() == c.token and len(c.top_logprobs) == 2
        values = [t.logprob for t in c.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert c.token not in [t.token for t in c.top_logprobs] or c.logprob in values


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


def _readme_block(lang: str, needle: str) -> str:
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Serving"):]
    return next(b for b in re.findall(rf"```{lang}\n(.*?)```", section, re.S) if needle in b)


def test_readme_openai_example_runs(bundle, capsys):
    code = _readme_block("python", "OpenAI(")
    with running(bundle, model_name="model") as (url, _):
        exec(code.replace("http://127.0.0.1:8000", url), {})
    out = capsys.readouterr().out
    assert "'steps'" in out and "'forwards'" in out


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


# ---- the chat page, end to end in headless Chromium ---------------------------------------------------------

def _chromium():
    """A headless Chromium driven by Selenium, or a skip saying what is missing (a failure where CI needs it)."""
    import os
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in [("chromium", browser), ("chromedriver", driver)] if not path]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        why = f"the page test needs {', '.join(missing)} (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("LLADA_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,800"]:
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(driver))


# Records, for every render of the answer canvas, how many of its positions were still masked and how many end-run
# markers it showed, every status line, and the body of every request the page sends.
_WATCH_CANVAS = """
window.maskedCounts = [];
window.restCounts = [];
window.statuses = [];
window.sentBodies = [];
const pageFetch = window.fetch;
window.fetch = (url, init) => { window.sentBodies.push(JSON.parse(init.body)); return pageFetch(url, init); };
new MutationObserver(() => {
  const canvas = document.querySelector('#log .turn:last-child .canvas');
  if (canvas && canvas.children.length) {
    window.maskedCounts.push(canvas.querySelectorAll('.mask').length);
    window.restCounts.push(canvas.querySelectorAll('.rest').length);
  }
}).observe(document.getElementById('log'), {childList: true, subtree: true});
new MutationObserver(() => window.statuses.push(document.getElementById('status').textContent))
  .observe(document.getElementById('status'), {childList: true, subtree: true, characterData: true});
"""


def _ask(browser, wait, text, **controls):
    from selenium.webdriver.common.by import By

    for name, value in controls.items():
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(str(value))
    if text is not None:
        browser.find_element(By.ID, "prompt").send_keys(text)
    browser.find_element(By.ID, "send").click()
    # the button is disabled while the answer streams in; the status line then says "done" or the error
    wait.until(lambda b: b.find_element(By.ID, "send").is_enabled())


def test_chat_page_in_headless_chromium(bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tok = bundle.tokenizer
    browser = _chromium()
    # 0.1 s per forward: each denoising state reaches the page in its own network chunk
    with running(bundle, delay=0.1) as (url, _):
        try:
            wait = WebDriverWait(browser, 60)
            browser.get(url + "/")
            browser.execute_script(_WATCH_CANVAS)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#preset option")) > 1)
            shown = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#preset option")]
            assert shown == ["", *SAMPLER_PRESETS]  # "" is the server's default
            # the legend: the step scale as swatches, early (blue) to late (red)
            legend = browser.find_element(By.ID, "legend")
            assert legend.is_displayed() and "early" in legend.text and "late" in legend.text
            swatches = legend.find_elements(By.CSS_SELECTOR, ".swatches span")
            assert len({w.value_of_css_property("background-color") for w in swatches}) == len(swatches) > 3
            _ask(browser, wait, "what is two plus two", steps=8, max_tokens=8, block_length=4)
            assert browser.find_element(By.ID, "status").text == "done in 8 steps"

            first = [{"role": "user", "content": "what is two plus two"}]
            ids = _reference_ids(bundle, _chat_ids(tok, first), steps=8, gen_length=8, block_length=4)
            want = tok.decode(ids, skip_special_tokens=True).lstrip()
            (final,) = browser.find_elements(By.CSS_SELECTOR, ".answer.final")
            assert final.get_attribute("textContent") == want
            assert want and browser.find_element(By.ID, "log").text.count(want) == 1  # the answer, once

            # The block filled in one token per step, and the page drew the states in between, saying which step.
            counts = browser.execute_script("return window.maskedCounts")
            assert counts[-1] == 0
            assert counts == sorted(counts, reverse=True)
            assert len({c for c in counts if 0 < c < 8}) >= 3, counts
            statuses = browser.execute_script("return window.statuses")
            assert [f"denoising: step {k} of 8" for k in range(1, 9)] == [t for t in statuses if "step" in t
                                                                           and "done" not in t]
            spans = browser.find_elements(By.CSS_SELECTOR, "#log .turn:last-child .canvas span:not(.rest)")
            assert len(spans) == len(ids)  # the answer's tokens; anything after them is one marker
            steps = [int(s.get_attribute("title").removeprefix("step ").split(":")[0]) for s in spans]
            assert len(set(steps)) == len(ids)
            assert len({s.value_of_css_property("background-color") for s in spans}) == len(ids)  # colour = step
            browser.save_screenshot(str(tmp_path / "chat.png"))

            # A second turn carries the conversation so far, with temperature and threshold set.
            _ask(browser, wait, "the cat", temperature=0, threshold=0.5)
            second = first + [{"role": "assistant", "content": want}, {"role": "user", "content": "the cat"}]
            want2 = _reference(bundle, _chat_ids(tok, second), steps=8, gen_length=8, block_length=4, threshold=0.5)
            assert browser.find_elements(By.CSS_SELECTOR, ".answer.final")[-1].get_attribute("textContent") == want2

            # A control out of range: the server's 422 message is shown, the failed turn leaves the conversation
            # and its text stays in the box; fixing the control and resending continues where the chat was.
            _ask(browser, wait, "a dog", steps=0)
            assert "steps" in browser.find_element(By.ID, "status").text
            assert browser.find_element(By.ID, "prompt").get_attribute("value") == "a dog"
            _ask(browser, wait, None, steps=8)
            assert browser.find_element(By.ID, "status").text.startswith("done")
            third = second + [{"role": "assistant", "content": want2}, {"role": "user", "content": "a dog"}]
            want3 = _reference(bundle, _chat_ids(tok, third), steps=8, gen_length=8, block_length=4, threshold=0.5)
            answers = browser.find_elements(By.CSS_SELECTOR, "#log .answer")
            assert [a.get_attribute("textContent") for a in answers] == [want, want2, want3]
            sent = browser.execute_script("return window.sentBodies")
            assert [b["messages"] for b in sent] == [first, second, third, third]
            assert [(b["steps"], b["max_tokens"], b["block_length"], b["remasking"]) for b in sent] == [
                (8, 8, 4, "low_confidence"), (8, 8, 4, "low_confidence"), (0, 8, 4, "low_confidence"),
                (8, 8, 4, "low_confidence")]
            assert "temperature" not in sent[0] and [(b["temperature"], b["threshold"]) for b in sent[1:]] == [
                (0, 0.5)] * 3

            # Nothing came from anywhere but this server.
            loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
            assert loaded and all(name.startswith(url + "/") for name in loaded), loaded
            browser.save_screenshot(str(tmp_path / "chat-after.png"))
        finally:
            browser.quit()
    assert (tmp_path / "chat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chat_page_collapses_trailing_end_tokens_into_one_marker(bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tok = bundle.tokenizer
    words = tok(" cat sat", add_special_tokens=False)["input_ids"]
    browser = _chromium()
    with running(bundle, delay=0.05, tail=words + [tok.eos_token_id] * 6) as (url, _):
        try:
            wait = WebDriverWait(browser, 60)
            browser.get(url + "/")
            browser.execute_script(_WATCH_CANVAS)
            _ask(browser, wait, "the cat", steps=8, max_tokens=len(words) + 6, block_length=len(words) + 6)
            (final,) = browser.find_elements(By.CSS_SELECTOR, ".answer.final")
            assert final.get_attribute("textContent") == "cat sat"
            (rest,) = final.find_elements(By.CSS_SELECTOR, ".rest")
            assert rest.get_attribute("data-count") == "6" and tok.eos_token in rest.get_attribute("title")
            shown = browser.execute_script("return getComputedStyle(arguments[0], '::after').content", rest)
            assert "6" in shown and rest.is_displayed(), shown  # one marker, with its count
            assert max(browser.execute_script("return window.restCounts")) == 1  # while denoising too
            browser.save_screenshot(str(tmp_path / "eos.png"))
        finally:
            browser.quit()


def test_page_needs_no_network():
    """No script, style, font or image from elsewhere: the page works on a machine without internet."""
    import re
    from importlib import resources

    page = resources.files("llada.serve").joinpath("page.html").read_text()
    assert not re.search(r"(src|href)\s*=|@import|url\(|https?://|//[a-z0-9.-]+\.[a-z]{2,}", page, re.I)


def test_chat_page_sends_the_api_key(bundle):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _chromium()
    with running(bundle, api_key="sekret") as (url, _):
        try:
            wait = WebDriverWait(browser, 60)
            browser.get(url + "/")  # the page itself is public; the API behind it is not
            _ask(browser, wait, "the cat", steps=4, max_tokens=4, block_length=4)
            assert "API key" in browser.find_element(By.ID, "status").text
            assert browser.find_element(By.ID, "prompt").get_attribute("value") == "the cat"
            _ask(browser, wait, None, api_key="sekret")
            assert browser.find_element(By.ID, "status").text.startswith("done")
            assert len(browser.find_elements(By.CSS_SELECTOR, "#log .answer.final")) == 1
        finally:
            browser.quit()


def test_batcher_keeps_arrival_order_across_option_groups(bundle):
    """The oldest waiting job runs next with the next-oldest of its options; none is lost or overtaken."""
    import asyncio

    from llada.serve.batcher import Batcher, Job

    tok = bundle.tokenizer
    names = ["x0", "a1", "b1", "a2", "a3", "b2"]  # a* and b* differ in their sampler options
    prompt = {n: [tok.bos_token_id] * (k + 1) for k, n in enumerate(names)}  # each job known by its prompt
    batches: list[list[str]] = []
    gate = threading.Event()

    def record(jobs):
        batches.append([next(n for n in names if prompt[n] == j.prompt) for j in jobs])
        gate.wait(timeout=30)  # the worker holds its first batch until every other job is waiting

    loop = asyncio.new_event_loop()
    batcher = Batcher(bundle.model, tok.pad_token_id, max_batch=2, max_queue=8, on_batch=record)
    try:
        jobs = {n: Job(prompt[n], SamplerOptions(steps=1 if n[0] == "b" else 2, gen_length=2, block_length=2), loop)
                for n in names}
        batcher.submit(jobs["x0"])
        while not batches:
            time.sleep(0.01)
        for n in names[1:]:
            batcher.submit(jobs[n])
        gate.set()
        deadline = time.monotonic() + 30
        while sum(map(len, batches)) < len(names) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        batcher.close()
        loop.close()
    assert batches == [["x0"], ["a1", "a2"], ["b1", "b2"], ["a3"]]


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

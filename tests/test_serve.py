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
from llada.sampling import generate
from llada.serve.app import ServeConfig, create_app
from llada.tokenizer import config_ids, train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "what is two plus two", "four is the answer"] * 20


@pytest.fixture(scope="module")
def bundle():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    model = LLaDAModel(preset("debug", **config_ids(tok))).eval()
    with torch.no_grad():
        model.transformer.ff_out.weight.mul_(10)
    return SimpleNamespace(model=model, tokenizer=tok)


class Slow(torch.nn.Module):
    """The same model, `delay` seconds slower per forward (to make queues and timeouts observable)."""

    def __init__(self, model, delay):
        super().__init__()
        self.inner, self.delay, self.config = model, delay, model.config

    @property
    def device(self):
        return self.inner.device

    def forward(self, *a, **k):
        time.sleep(self.delay)
        return self.inner(*a, **k)

    def forward_kv(self, *a, **k):
        time.sleep(self.delay)
        return self.inner.forward_kv(*a, **k)


@contextmanager
def running(bundle, delay: float = 0.0, **config):
    model = Slow(bundle.model, delay) if delay else bundle.model
    app = create_app(SimpleNamespace(model=model, tokenizer=bundle.tokenizer), ServeConfig(**config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _reference(bundle, prompt_ids, **opts) -> str:
    out = generate(bundle.model, torch.tensor([prompt_ids]), **opts)
    ids = out.responses[0].tolist()
    stops = {bundle.model.config.eos_token_id, bundle.model.config.eot_token_id}
    ids = ids[: next((i for i, t in enumerate(ids) if t in stops), len(ids))]
    return bundle.tokenizer.decode(ids, skip_special_tokens=True).strip()


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


def test_dynamic_batching_groups_concurrent_requests(bundle):
    body = {"prompt": "the cat", "max_tokens": 4, "steps": 4, "block_length": 4}
    with running(bundle, delay=0.05, max_batch=8) as (url, app):
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            rs = list(pool.map(lambda _: httpx.post(url + "/v1/completions", json=body, timeout=30), range(6)))
        assert all(r.status_code == 200 for r in rs)
        assert len({r.json()["choices"][0]["text"] for r in rs}) == 1  # same prompt, same answer in any batch
        assert max(app.state.batch_sizes) > 1


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"prompt": "hi", "stepz": 3}).encode(), 422, "stepz"),
    (json.dumps({"prompt": "hi", "steps": 0}).encode(), 422, "steps"),
    (json.dumps({"prompt": "hi", "threshold": 2}).encode(), 422, "threshold"),
    (json.dumps({"prompt": "hi", "remasking": "loudest"}).encode(), 422, "remasking"),
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


def test_page_is_served(bundle):
    with running(bundle) as (url, _):
        r = httpx.get(url + "/")
        assert r.status_code == 200 and "stream_states" in r.text and "/v1/chat/completions" in r.text

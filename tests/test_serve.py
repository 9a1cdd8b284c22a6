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
from llada.serve.app import ServeConfig, create_app
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
        return logits if output_positions is None else logits[:, output_positions]

    def forward_kv(self, *a, **k):  # the cached path is only slowed
        time.sleep(self.delay)
        return self.inner.forward_kv(*a, **k)


@contextmanager
def running(bundle, delay: float = 0.0, tail=(), **config):
    model = Rigged(bundle.model, delay, tail) if delay or tail else bundle.model
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
    from llada.serve.app import _sendable

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


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"prompt": "hi", "stepz": 3}).encode(), 422, "stepz"),
    (json.dumps({"prompt": "hi", "steps": 0}).encode(), 422, "steps"),
    (json.dumps({"prompt": "hi", "threshold": 2}).encode(), 422, "threshold"),
    (json.dumps({"prompt": "hi", "remasking": "loudest"}).encode(), 422, "remasking"),
    (json.dumps({"prompt": "hi", "seed": -1}).encode(), 422, "seed"),
    (json.dumps({"prompt": "hi", "top_p": 0.9}).encode(), 422, "nucleus"),
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
        sampler = httpx.get(url + "/v1/sampler").json()  # what the page fills its controls with
        assert sampler["defaults"] == SamplerOptions().to_dict()
        assert set(sampler["presets"]) == set(SAMPLER_PRESETS) and "low_confidence" in sampler["remasking"]


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


# Records, for every render of the answer canvas, how many of its positions were still masked, and the body of
# every request the page sends.
_WATCH_CANVAS = """
window.maskedCounts = [];
window.sentBodies = [];
const pageFetch = window.fetch;
window.fetch = (url, init) => { window.sentBodies.push(JSON.parse(init.body)); return pageFetch(url, init); };
new MutationObserver(() => {
  const canvas = document.querySelector('#log .turn:last-child .canvas');
  if (canvas && canvas.children.length) window.maskedCounts.push(canvas.querySelectorAll('.mask').length);
}).observe(document.getElementById('log'), {childList: true, subtree: true});
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
            _ask(browser, wait, "what is two plus two", steps=8, max_tokens=8, block_length=4)
            assert browser.find_element(By.ID, "status").text == "done"

            first = [{"role": "user", "content": "what is two plus two"}]
            want = _reference(bundle, _chat_ids(tok, first), steps=8, gen_length=8, block_length=4)
            final = browser.find_elements(By.CSS_SELECTOR, ".answer.final")[-1]
            assert final.get_attribute("textContent") == want

            # The block filled in one token per step, and the page drew the states in between.
            counts = browser.execute_script("return window.maskedCounts")
            assert counts[-1] == 0
            assert counts == sorted(counts, reverse=True)
            assert len({c for c in counts if 0 < c < 8}) >= 3, counts
            spans = browser.find_elements(By.CSS_SELECTOR, "#log .turn:last-child .canvas span")
            assert len(spans) == 8
            steps = [int(s.get_attribute("title").removeprefix("step ").split(":")[0]) for s in spans]
            assert sorted(steps) == list(range(8))
            assert len({s.value_of_css_property("background-color") for s in spans}) == 8  # colour = step
            browser.save_screenshot(str(tmp_path / "chat.png"))

            # A second turn carries the conversation so far.
            _ask(browser, wait, "the cat")
            second = first + [{"role": "assistant", "content": want}, {"role": "user", "content": "the cat"}]
            want2 = _reference(bundle, _chat_ids(tok, second), steps=8, gen_length=8, block_length=4)
            assert browser.find_elements(By.CSS_SELECTOR, ".answer.final")[-1].get_attribute("textContent") == want2

            # A control out of range: the server's 422 message is shown, the failed turn leaves the conversation
            # and its text stays in the box; fixing the control and resending continues where the chat was.
            _ask(browser, wait, "a dog", steps=0)
            assert "steps" in browser.find_element(By.ID, "status").text
            assert browser.find_element(By.ID, "prompt").get_attribute("value") == "a dog"
            _ask(browser, wait, None, steps=8)
            assert browser.find_element(By.ID, "status").text == "done"
            third = second + [{"role": "assistant", "content": want2}, {"role": "user", "content": "a dog"}]
            want3 = _reference(bundle, _chat_ids(tok, third), steps=8, gen_length=8, block_length=4)
            answers = browser.find_elements(By.CSS_SELECTOR, "#log .answer")
            assert [a.get_attribute("textContent") for a in answers] == [want, want2, want3]
            sent = browser.execute_script("return window.sentBodies")
            assert [b["messages"] for b in sent] == [first, second, third, third]
            assert [(b["steps"], b["max_tokens"], b["block_length"], b["remasking"]) for b in sent] == [
                (8, 8, 4, "low_confidence"), (8, 8, 4, "low_confidence"), (0, 8, 4, "low_confidence"),
                (8, 8, 4, "low_confidence")]
            browser.save_screenshot(str(tmp_path / "chat-after.png"))
        finally:
            browser.quit()
    assert (tmp_path / "chat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
            assert browser.find_element(By.ID, "status").text == "done"
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

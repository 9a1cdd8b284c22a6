"""Streaming: every step, end tokens, and nothing sent that would be taken back."""

from __future__ import annotations

import json
import time

import httpx
import torch
from support.serve import (
    _chat_ids,
    running,
)

from llada.sampling import generate


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

"""Log-probabilities over HTTP: the Eq. 6 estimates in both OpenAI formats."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import openai
import pytest
import torch
from support.serve import (
    _chat_ids,
    _reference_ids,
    running,
)

from llada.config import preset
from llada.model import LLaDAModel
from llada.sampling import generate
from llada.tokenizer import config_ids


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

"""The server driven by the official `openai` client."""

from __future__ import annotations

import httpx
import openai
from support.serve import (
    _chat_ids,
    _readme_block,
    _reference,
    _reference_ids,
    running,
)


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


def test_api_key(bundle):
    with running(bundle, api_key="sekret") as (url, _):
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sekret"}).status_code == 200
        client = openai.OpenAI(base_url=url + "/v1", api_key="sekret")
        assert client.models.list().data[0].id == "llada"


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


def test_models_report_the_served_name_owner_and_length(bundle):
    with running(bundle, model_name="tiny-llada") as (url, _):
        (m,) = openai.OpenAI(base_url=url + "/v1", api_key="none").models.list().data
        assert (m.id, m.owned_by, m.model_extra["max_model_len"]) == (
            "tiny-llada", "llada", bundle.model.config.max_sequence_length)
        r = httpx.post(url + "/v1/completions", json={"prompt": "the cat", "max_tokens": 4, "model": "whatever"})
        assert r.json()["model"] == "tiny-llada"  # one model behind the server: its own name, whatever was asked


def test_readme_openai_example_runs(bundle, capsys):
    code = _readme_block("python", "OpenAI(")
    with running(bundle, model_name="model") as (url, _):
        exec(code.replace("http://127.0.0.1:8000", url), {})
    out = capsys.readouterr().out
    assert "'steps'" in out and "'forwards'" in out
